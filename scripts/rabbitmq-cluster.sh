#!/usr/bin/env bash
# A RabbitMQ cluster of three nodes on this machine, from the RabbitMQ already installed (Debian
# package or the generic Unix build on PATH): for the tests, the chaos run, and for trying cluster
# mode on a laptop. It never touches another node (such as a local broker on port 5672).
#
#   scripts/rabbitmq-cluster.sh start         start the nodes that are not running and cluster them
#   scripts/rabbitmq-cluster.sh stop          stop every node of the cluster (their data is kept)
#   scripts/rabbitmq-cluster.sh status        each node: running or not, and the cluster's members
#                                             (exit 0 if all three run, 1 otherwise)
#   scripts/rabbitmq-cluster.sh clean         stop, then delete the state directory
#   scripts/rabbitmq-cluster.sh urls [USER:PASSWORD]   the comma-separated RC_AMQP_URL of the nodes
#   scripts/rabbitmq-cluster.sh stop-node N | start-node N   one node (1, 2 or 3) alone
#   scripts/rabbitmq-cluster.sh ctl N ARGS... rabbitmqctl ARGS against node N
#
# Idempotent (start on a running cluster, stop on a stopped one, do nothing and say so); no stdin;
# every broker call is bounded in time; prints what it does. Exit 1 with the reason when it fails.
#
#   RC_CLUSTER_PORTS            AMQP ports of the nodes (default "5701 5702 5703"); node N is named
#                               rc-<port>@localhost and listens on 127.0.0.1 only
#   RC_CLUSTER_DIR              state directory (default ${TMPDIR:-/tmp}/rc-rabbitmq-cluster-<first port>)
#   RC_CLUSTER_MANAGEMENT       1 (default): the management plugin on AMQP port + 10000; 0: none
#   RC_CLUSTER_STARTUP_TIMEOUT  seconds a node may take to boot (default 120)
#
# Ports of node N besides AMQP: Erlang distribution on AMQP port + 20000, the CLI tools on AMQP port
# + 30000 to + 30010. The nodes share an Erlang cookie of their own (in the state directory), so
# they cannot talk to any other node of this machine. Run as root, the nodes run as the `rabbitmq`
# user (which owns the state directory); otherwise as the calling user. Each node gets the hard
# limit of open files (`ulimit -n`): RabbitMQ 3.x sizes its file-handle budget from it, and a small
# budget stalls new connections once many quorum queues exist (see scripts/ensure-rabbitmq.sh).
set -euo pipefail

read -r -a PORTS <<<"${RC_CLUSTER_PORTS:-5701 5702 5703}"
STATE="${RC_CLUSTER_DIR:-${TMPDIR:-/tmp}/rc-rabbitmq-cluster-${PORTS[0]}}"
MANAGEMENT="${RC_CLUSTER_MANAGEMENT:-1}"
TIMEOUT="${RC_CLUSTER_STARTUP_TIMEOUT:-120}"

say() { printf 'rabbitmq-cluster: %s\n' "$*"; }
die() {
  printf 'rabbitmq-cluster: %s\n' "$*" >&2
  exit 1
}

[ "${#PORTS[@]}" -eq 3 ] || die "RC_CLUSTER_PORTS must name three ports, not '${RC_CLUSTER_PORTS:-}'"
for port in "${PORTS[@]}"; do
  [[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1024 ] && [ "$port" -le 35000 ] ||
    die "invalid port '$port' in RC_CLUSTER_PORTS (1024 to 35000: the node also uses port + 30000)"
done

SBIN=""
for candidate in /usr/lib/rabbitmq/bin "$(dirname "$(command -v rabbitmq-server 2>/dev/null || echo /x/x)")"; do
  if [ -x "$candidate/rabbitmq-server" ] && [ -x "$candidate/rabbitmqctl" ]; then
    SBIN="$candidate"
    break
  fi
done
[ -n "$SBIN" ] || die "RabbitMQ is not installed (Debian/Ubuntu: sudo apt-get install rabbitmq-server)"

if [ "$(id -u)" -eq 0 ]; then
  id rabbitmq >/dev/null 2>&1 || die "running as root, but there is no 'rabbitmq' user to run the nodes as"
  RUN_AS=(runuser -u rabbitmq --)
  OWNER=rabbitmq
else
  RUN_AS=()
  OWNER="$(id -un)"
fi

name_of() { printf 'rc-%s@localhost' "${PORTS[$(($1 - 1))]}"; }
dir_of() { printf '%s/%s' "$STATE" "${PORTS[$(($1 - 1))]}"; }
check_index() { [[ "${1:-}" =~ ^[123]$ ]] || die "node number must be 1, 2 or 3, not '${1:-}'"; }

# Run a RabbitMQ program for node $1 with that node's environment only (nothing inherited from the
# caller's RABBITMQ_* variables, nor from /etc/rabbitmq/rabbitmq-env.conf).
as_node() {
  local index=$1 program=$2
  shift 2
  local port="${PORTS[$((index - 1))]}" dir
  dir="$(dir_of "$index")"
  "${RUN_AS[@]}" env -i PATH="/usr/sbin:/usr/bin:/sbin:/bin:$SBIN" LANG=C.UTF-8 LC_ALL=C.UTF-8 \
    HOME="$STATE/home" \
    RABBITMQ_NODENAME="$(name_of "$index")" \
    RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
    RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
    RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
    RABBITMQ_MNESIA_BASE="$dir/mnesia" \
    RABBITMQ_LOG_BASE="$dir/log" \
    RABBITMQ_PID_FILE="$dir/rabbitmq.pid" \
    RABBITMQ_DIST_PORT="$((port + 20000))" \
    RABBITMQ_CTL_DIST_PORT_MIN="$((port + 30000))" \
    RABBITMQ_CTL_DIST_PORT_MAX="$((port + 30010))" \
    ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    "$SBIN/$program" "$@"
}

# rabbitmqctl against node $1, bounded by $2 seconds.
ctl_within() {
  local index=$1 seconds=$2
  shift 2
  timeout "$seconds" bash -c "$(declare -f as_node dir_of name_of); $(declare -p PORTS STATE SBIN RUN_AS); as_node \"\$@\"" \
    _ "$index" rabbitmqctl -n "$(name_of "$index")" "$@" </dev/null
}

pid_of() {
  local file pid
  file="$(dir_of "$1")/rabbitmq.pid"
  [ -s "$file" ] || return 1
  pid="$(tr -dc '0-9' <"$file")"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  # The pid is a node of this cluster (not a process that reused the number): the Erlang VM, with
  # this cluster's home directory.
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "beam.* -home $STATE/home " || return 1
  printf '%s' "$pid"
}
running() { pid_of "$1" >/dev/null; }

prepare() {
  local index=$1 port="${PORTS[$(($1 - 1))]}" dir
  dir="$(dir_of "$index")"
  mkdir -p "$dir/mnesia" "$dir/log" "$STATE/home"
  chmod 755 "$STATE"
  if [ ! -s "$STATE/home/.erlang.cookie" ]; then
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -dc 'a-f0-9' | tr 'a-f' 'A-F' >"$STATE/home/.erlang.cookie")
  fi
  chmod 400 "$STATE/home/.erlang.cookie"
  cat >"$dir/rabbitmq.conf" <<EOF
# Written by scripts/rabbitmq-cluster.sh (node $index of the cluster in $STATE).
listeners.tcp.local = 127.0.0.1:$port
loopback_users.guest = true
# With three nodes, a node cut off from the other two pauses rather than serving a split cluster.
cluster_partition_handling = pause_minority
consumer_timeout = 1800000
# Fresh figures from the management API (which node a client uses, a queue's leader): every second.
collect_statistics_interval = 1000
EOF
  if [ "$MANAGEMENT" = 1 ]; then
    printf 'management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = %s\n' "$((port + 10000))" >>"$dir/rabbitmq.conf"
    echo '[rabbitmq_management].' >"$dir/enabled_plugins"
  else
    echo '[].' >"$dir/enabled_plugins"
  fi
  echo '[].' >"$dir/advanced.config"
  : >"$dir/rabbitmq-env.conf"
  chown -R "$OWNER" "$STATE"
  if [ "${#RUN_AS[@]}" -gt 0 ] && ! "${RUN_AS[@]}" test -w "$dir/mnesia"; then
    die "user rabbitmq cannot write to $dir (a parent directory is private?): set RC_CLUSTER_DIR elsewhere"
  fi
}

show_log_tail() {
  local log
  log="$(dir_of "$1")/log/$(name_of "$1").log"
  if [ -f "$log" ]; then
    say "last lines of $log:" >&2
    tail -n 15 "$log" >&2 || true
  fi
}

launch() {
  local index=$1 port="${PORTS[$(($1 - 1))]}"
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port is taken by another process: choose other ports with RC_CLUSTER_PORTS"
  fi
  prepare "$index"
  say "starting node $index $(name_of "$index") (AMQP 127.0.0.1:$port)"
  (
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    as_node "$index" rabbitmq-server -detached </dev/null >>"$(dir_of "$index")/log/startup.log" 2>&1
  ) || die "rabbitmq-server did not start node $index (see $(dir_of "$index")/log/startup.log)"
}

await_node() {
  local index=$1 deadline=$((SECONDS + TIMEOUT))
  while ((SECONDS < deadline)); do
    if running "$index" && ctl_within "$index" $((TIMEOUT + 10)) -q await_startup --timeout "$TIMEOUT" >/dev/null 2>&1; then
      say "node $index $(name_of "$index") is up"
      return 0
    fi
    sleep 1
  done
  show_log_tail "$index"
  die "node $index $(name_of "$index") did not start within ${TIMEOUT}s"
}

members_seen_by() { # the running members node $1 sees, one name a line
  ctl_within "$1" 60 -q eval 'rabbit_nodes:all_running().' 2>/dev/null | tr -d "[]' \\n" | tr ',' '\n' | grep -v '^$' || true
}

join() {
  local index=$1 first
  first="$(name_of 1)"
  say "node $index joins the cluster of $first (stop_app, join_cluster, start_app)"
  ctl_within "$index" 120 -q stop_app >/dev/null
  ctl_within "$index" 120 -q join_cluster "$first" >/dev/null ||
    die "node $index could not join $first: run '$0 clean' and start again"
  ctl_within "$index" $((TIMEOUT + 10)) -q start_app >/dev/null
}

start() {
  local index started=()
  for index in 1 2 3; do
    if running "$index"; then
      say "node $index $(name_of "$index") already running"
    else
      launch "$index"
      started+=("$index")
    fi
  done
  local pids=()
  for index in "${started[@]}"; do
    await_node "$index" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || exit 1; done
  local members joiners=()
  members="$(members_seen_by 1)"
  for index in 2 3; do
    grep -qx "$(name_of "$index")" <<<"$members" || joiners+=("$index")
  done
  for index in "${joiners[@]}"; do # one at a time: two joins at once can break the second node's boot
    join "$index"
  done
  members="$(members_seen_by 1)"
  [ "$(grep -c . <<<"$members")" -eq 3 ] || die "the cluster has not formed: node 1 sees $(tr '\n' ' ' <<<"$members")"
  say "cluster running: $(tr '\n' ' ' <<<"$members")"
  say "RC_AMQP_URL=$(urls guest:guest)"
}

stop_node() {
  local index=$1 pid
  if ! pid="$(pid_of "$index")"; then
    say "node $index $(name_of "$index") is not running"
    return 0
  fi
  say "stopping node $index $(name_of "$index") (pid $pid)"
  ctl_within "$index" 120 -q stop "$(dir_of "$index")/rabbitmq.pid" >/dev/null 2>&1 || true
  local deadline=$((SECONDS + 30))
  while [ -d "/proc/$pid" ] && ((SECONDS < deadline)); do sleep 0.5; done
  if [ -d "/proc/$pid" ]; then
    say "node $index did not stop: sending SIGTERM to pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 30))
    while [ -d "/proc/$pid" ] && ((SECONDS < deadline)); do sleep 0.5; done
    if [ -d "/proc/$pid" ]; then
      say "node $index still running: sending SIGKILL to pid $pid"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  say "node $index stopped"
}

stop() {
  local pids=() index
  for index in 3 2 1; do
    stop_node "$index" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
}

status() {
  local index running=0 pid
  for index in 1 2 3; do
    if pid="$(pid_of "$index")"; then
      running=$((running + 1))
      say "node $index $(name_of "$index") AMQP 127.0.0.1:${PORTS[$((index - 1))]} running (pid $pid)"
    else
      say "node $index $(name_of "$index") AMQP 127.0.0.1:${PORTS[$((index - 1))]} stopped"
    fi
  done
  for index in 1 2 3; do
    if running "$index"; then
      say "running members seen by node $index: $(members_seen_by "$index" | tr '\n' ' ')"
      break
    fi
  done
  say "state in $STATE"
  [ "$running" = 3 ]
}

urls() {
  local credentials="${1:-guest:guest}" list="" port
  for port in "${PORTS[@]}"; do
    list="${list:+$list,}amqp://$credentials@127.0.0.1:$port/"
  done
  printf '%s\n' "$list"
}

command="${1:-}"
shift || true
case "$command" in
start) start ;;
stop) stop ;;
status) status ;;
clean)
  stop
  rm -rf "$STATE"
  say "deleted $STATE"
  ;;
urls) urls "$@" ;;
stop-node)
  check_index "${1:-}"
  stop_node "$1"
  ;;
start-node)
  check_index "${1:-}"
  if running "$1"; then
    say "node $1 $(name_of "$1") already running"
  else
    launch "$1"
    await_node "$1"
  fi
  ;;
ctl)
  check_index "${1:-}"
  index=$1
  shift
  ctl_within "$index" 300 "$@"
  ;;
*) die "usage: $0 start|stop|status|clean|urls [USER:PASSWORD]|stop-node N|start-node N|ctl N ARGS..." ;;
esac
