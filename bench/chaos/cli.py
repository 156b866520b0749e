"""The chaos run's command line: its options, its printed report and its JSON file."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from pathlib import Path

import bench.chaos
from bench.chaos.common import FAULTS, Config, Report
from bench.chaos.run import Chaos
from bench.chaos_cluster import NODE_FAULTS


def print_report(config: Config, report: Report) -> None:
    print(f"seed: {config.seed}")
    for name, value in report.figures.items():
        print(f"{name}: {value}")
    on_cluster = config.broker_fault == "node-stop"
    kinds = [k for k in FAULTS if not (on_cluster and k == "broker_outage")] + list(NODE_FAULTS) * on_cluster
    for kind in kinds:
        print(f"faults injected, {kind.replace('_', ' ')}: {report.faults.get(kind, 0)}")
    for line in report.off_plan:
        print(f"fault off plan: {line}")
    for line in report.misplaced:
        print(f"fault misplaced: {line}")
    for line in report.unplanned:
        print(f"not as planned: {line}")
    for line in report.unexplained:
        print(f"not as planned, unexplained: {line}")
    for name, value in report.violations.items():
        print(f"violations, {name}: {value}")
    total_faults = sum(report.faults.values())
    print(
        f"chaos: {report.figures.get('releases driven', 0)} releases, {total_faults} faults injected, "
        f"{report.total_violations} violations"
    )


def parse(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description=bench.chaos.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--releases", type=int, default=20)
    parser.add_argument("--services", type=int, default=5)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--time-limit", type=float, default=900.0, help="seconds for the drivers (then settle)"
    )
    parser.add_argument(
        "--broker-fault",
        choices=("proxy", "rabbitmqctl", "node-stop"),
        default="proxy",
        help="cut every connection through a TCP proxy, stop and start the broker itself, or run on a "
        "three-node cluster and stop its nodes (bench/chaos_cluster.py)",
    )
    parser.add_argument(
        "--coordinator",
        default="coordinator",
        help="module run as the coordinator (e.g. a sabotaged one, see bench/sabotage.py)",
    )
    parser.add_argument(
        "--fault-gap",
        type=float,
        nargs=2,
        default=(1.5, 4.0),
        metavar=("MIN", "MAX"),
        help="seconds after each kill, cut or redeclared queue before the next may start (seeded per fault)",
    )
    parser.add_argument(
        "--work-seconds", type=float, default=4.0, help="seconds a service processes one release (+-50%%)"
    )
    parser.add_argument(
        "--instances", type=int, default=1, help="processes per task service; a service kill takes one"
    )
    parser.add_argument("--json", type=Path, default=Path("bench/results/chaos.json"))
    args = parser.parse_args(argv)
    config = Config(
        releases=args.releases,
        services=args.services,
        time_limit=args.time_limit,
        broker_fault=args.broker_fault,
        coordinator_module=args.coordinator,
        fault_gap=(args.fault_gap[0], args.fault_gap[1]),
        work_seconds=args.work_seconds,
        instances=args.instances,
        json_path=args.json,
    )
    for option, value in (("--instances", config.instances), ("--releases", config.releases)):
        if value < 1:
            parser.error(f"{option} must be 1 or more, not {value}")
    if args.seed is not None:
        config.seed = args.seed
    return config


def write_json(path: Path, config: Config, report: Report, plan: list[dict[str, object]]) -> None:
    """The figures, the plan and the faults the run tried (to compare two runs with one seed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "seed": config.seed,
        **report.figures,
        "faults": dict(report.faults),
        "violations": report.violations,
        "unplanned": report.unplanned,
        "releases": report.releases,
        "unexplained": report.unexplained,
        "plan": plan,
        "injected": report.injected,
        "off plan": report.off_plan,
        "misplaced": report.misplaced,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    config = parse(argv)
    if config.broker_fault == "node-stop":  # the run's own connections lose nodes on purpose: no tracebacks
        for name in ("aiormq", "aio_pika"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    chaos = Chaos(config)
    report = asyncio.run(chaos.run())
    print_report(config, report)
    if config.json_path is not None:
        plan = [{"kind": f.kind, "release": f.release, "step": f.step} for f in chaos.plan.faults]
        write_json(config.json_path, config, report, plan)
    return 1 if report.total_violations else 0
