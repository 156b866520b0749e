"""Fault injection: run releases while killing, cutting and lying, then check every guarantee.

    python -m bench.chaos [--releases 20] [--services 5] [--seed N] [--time-limit 900]
                          [--broker-fault proxy|rabbitmqctl|node-stop] [--coordinator MODULE]

It builds a real installation on the local RabbitMQ: its own namespace, one broker user per service,
the coordinator and an operator user (``deploy.setup``), and no trusted users, so every reply is
signed by the broker. Coordinator and services are separate processes that reach the broker
through a TCP proxy. An operator drives R releases; the seed fixes a plan (``bench/chaos_plan.py``)
that says which fault hits which release at which step (created, processing, staged, ending), and the
operator injects each when its release reaches that step:

* kills the coordinator with SIGKILL and restarts it;
* kills a task service with SIGKILL and restarts it (its outcome store survives, as on disk);
* cuts every broker connection (through the proxy) or restarts the broker (``rabbitmqctl``);
  or, with ``node-stop``, runs on a three-node cluster of its own and stops nodes (bench/chaos_cluster.py);
* injects duplicate, reordered, stale, malformed, oversize and spoofed replies.

At the end it checks, from the store and from what every service journaled it did: releases
lost, releases stuck past their deadline, releases published while some service never staged,
data published by a service for a release that ended canceled or failed, staged data of such a release
that its service never discarded, duplicate or out-of-order final versions, spoofed or malformed messages
accepted, and coordinator crashes that were not injected. It compares the faults it injected with the plan.
Last line: ``chaos: R releases, K faults injected, V violations``; exit 1 if V > 0.

The parts: ``common`` (settings, report, processes), ``run`` (the installation and the order of things),
``operator`` (the releases and when their faults come), ``faults`` (the injectors), ``check`` (the end),
``cli`` (options and output).
"""

from __future__ import annotations

from bench.chaos.cli import main, parse, print_report
from bench.chaos.common import FAULTS, Config, Report
from bench.chaos.run import Chaos

__all__ = ["FAULTS", "Chaos", "Config", "Report", "main", "parse", "print_report"]
