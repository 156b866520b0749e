#!/usr/bin/env bash
# Make sure a local RabbitMQ node is running, answers AMQP, and has the management plugin enabled.
# Idempotent; needs no stdin; every broker call is bounded in time. Prints what it did.
# Exit 1 if RabbitMQ is not installed or will not come up.
#
#   RC_RABBITMQ_STARTUP_TIMEOUT  seconds to wait for the node to boot (default 240)
#   RC_RABBITMQ_PORT             AMQP port to check (default 5672)
#   RC_RABBITMQ_FILE_HANDLES     file-handle budget the node needs (default 16000)
#
# Why the file-handle budget: RabbitMQ 3.x reserves file handles per queue in its file-handle cache,
# whose limit comes from the node's `ulimit -n` (often 1024). With a few hundred quorum queues (a
# benchmark with 300 services, or many test namespaces) the budget runs out and the node stops
# setting up new connections: clients then hang in the AMQP handshake while old connections work.
set -euo pipefail

TIMEOUT="${RC_RABBITMQ_STARTUP_TIMEOUT:-240}"
PORT="${RC_RABBITMQ_PORT:-5672}"
HANDLES="${RC_RABBITMQ_FILE_HANDLES:-16000}"

say() { printf 'ensure-rabbitmq: %s\n' "$*"; }

if ! command -v rabbitmqctl >/dev/null 2>&1; then
  say "rabbitmqctl not found: RabbitMQ is not installed." >&2
  say "Install it (Debian/Ubuntu: sudo apt-get install rabbitmq-server), or point RC_AMQP_URL at a running broker." >&2
  exit 1
fi

node_running() { timeout 30 rabbitmqctl -q status </dev/null >/dev/null 2>&1; }

# True when the listener completes the first step of the AMQP 0-9-1 handshake (connection.start).
# A node can be "running" for rabbitmqctl and still never answer clients (a wedged listener).
amqp_answers() {
  timeout 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/${PORT} && printf 'AMQP\\x00\\x00\\x09\\x01' >&3 \
    && head -c 1 <&3 | od -An -tx1 | grep -q 01" </dev/null 2>/dev/null
}

await_amqp() {
  local deadline=$((SECONDS + $1))
  while ((SECONDS < deadline)); do
    if amqp_answers; then return 0; fi
    sleep 2
  done
  return 1
}

show_log_tail() {
  local log
  log=$(ls -t /var/log/rabbitmq/*.log 2>/dev/null | head -n 1 || true)
  if [ -n "$log" ]; then
    say "last lines of $log:" >&2
    tail -n 20 "$log" >&2 || true
  fi
}

start_node() {
  say "starting the node (rabbitmq-server -detached)"
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    say "rabbitmq-server not found on PATH (Debian/Ubuntu: sudo apt-get install rabbitmq-server)" >&2
    exit 1
  fi
  # A node started from here gets as many file descriptors as the hard limit allows.
  (ulimit -n "$(ulimit -Hn)" 2>/dev/null || true; rabbitmq-server -detached </dev/null) || true
  say "waiting up to ${TIMEOUT}s for startup"
  if ! timeout $((TIMEOUT + 30)) rabbitmqctl -q await_startup --timeout "$TIMEOUT" </dev/null >/dev/null 2>&1; then
    say "the node did not start within ${TIMEOUT}s" >&2
    show_log_tail
    exit 1
  fi
  say "node started"
}

# The file-handle cache limit of a running node (see the top of this file), raised if too low.
handle_limit() {
  timeout 30 rabbitmqctl -q eval 'proplists:get_value(total_limit, file_handle_cache:info([total_limit])).' \
    </dev/null 2>/dev/null | tr -dc '0-9'
}
raise_handle_limit() {
  local limit
  limit=$(handle_limit || true)
  if [ -n "$limit" ] && [ "$limit" -lt "$HANDLES" ]; then
    say "file-handle budget of the node is ${limit}: raising it to ${HANDLES}"
    timeout 30 rabbitmqctl -q eval "file_handle_cache:set_limit(${HANDLES})." </dev/null >/dev/null 2>&1 ||
      say "could not raise the file-handle budget (continuing)"
  fi
}
raise_handle_limit  # first: an exhausted budget also stalls `rabbitmqctl status`

if node_running; then
  say "node already running"
else
  say "node not running (or not answering rabbitmqctl status)"
  start_node
fi

raise_handle_limit

if ! await_amqp 30; then
  say "the node runs but does not answer AMQP on port ${PORT}: restarting its application"
  timeout 120 rabbitmqctl -q stop_app </dev/null >/dev/null 2>&1 || true
  timeout 180 rabbitmqctl -q start_app </dev/null >/dev/null 2>&1 || true
  if ! await_amqp 60; then
    say "still no AMQP answer: stopping the node and starting it again"
    timeout 120 rabbitmqctl -q stop </dev/null >/dev/null 2>&1 || true
    start_node
    raise_handle_limit
    if ! await_amqp "$TIMEOUT"; then
      say "RabbitMQ does not answer AMQP on port ${PORT}" >&2
      show_log_tail
      exit 1
    fi
  fi
fi
say "AMQP answers on port ${PORT}"

if timeout 60 rabbitmq-plugins -q list --enabled --minimal </dev/null 2>/dev/null | grep -qx 'rabbitmq_management'; then
  say "management plugin already enabled"
else
  say "enabling the management plugin"
  timeout 120 rabbitmq-plugins -q enable rabbitmq_management </dev/null >/dev/null
  say "management plugin enabled"
fi
