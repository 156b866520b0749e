"""One step of a run in words, for counter-example traces."""

from __future__ import annotations

from collections.abc import Iterable

from tests.explore.invariants import name
from tests.explore.model import Model
from tests.explore.world import Message, Move, World


def describe(model: Model, before: World, move: Move, after: World) -> str:
    services = model.services
    service = services[move.service] if move.service >= 0 else ""
    what = move.action.value if move.action is not None else ""
    of = f"{what} of {name(move.release)}"
    match move.kind:
        case "begin":
            unhealthy = ", ".join(services[s] for s in sorted(before.silent))
            told = f" ({unhealthy} unhealthy)" if unhealthy else ""
            return f"coordinator begins {name(move.release)}{told}" + _decision(model, move, before, after)
        case "deadline":
            return f"the deadline of {name(move.release)} passes" + _decision(model, move, before, after)
        case "unhealthy":
            return f"{service} reports itself unhealthy" + _decision(model, move, before, after)
        case "receive":
            again = ", and dies before acking it" if move.keep else ""
            received = f"coordinator receives {service}'s {move.outcome} to {of}{again}"
            return received + _decision(model, move, before, after)
        case "operator":
            return f"operator: {move.op} {name(move.release)}" + _decision(model, move, before, after)
        case "outbox":
            sent = _commands(model, before.outbox[move.release])
            how = "the broker takes them but the confirm is lost" if move.keep else "confirmed"
            return f"coordinator publishes the stored outbox of {name(move.release)}: {sent} ({how})"
        case "create":
            version = model.machine.facts[after.releases[move.release]].tentative_version
            facts = model.machine.facts
            still = [name(r) for r, rid in enumerate(before.releases) if not facts[rid].state.is_terminal]
            return (
                f"operator: create {name(move.release)} (tentative version {version}) "
                f"while {', '.join(still)} {'is' if len(still) == 1 else 'are'} open"
            )
        case "rerun":
            index = int(move.op)
            version = model.machine.facts[after.releases[index]].tentative_version
            return f"operator: rerun {name(move.release)} as {name(index)} (tentative version {version})"
        case "command":
            answer = f", answers {move.outcome}" if move.outcome is not None else ""
            again = ", and dies before acking it" if move.keep else ""
            return f"{service} receives {of}: {move.op}{answer}{again}"
        case "finish":
            return f"{service} finishes processing {name(move.release)}, answers {move.outcome}"
        case "lose":
            lost = f"{service}'s {move.outcome} to {of}" if move.outcome else f"{of} to {service}"
            return f"the broker loses {lost}"
        case "silent":
            return f"{service} goes silent (takes and answers nothing more)"
    raise ValueError(f"unknown move {move!r}")


def _decision(model: Model, move: Move, before: World, after: World) -> str:
    if not move.applied:
        return f" -> nothing changes ({move.reason})"
    facts = model.machine.facts[after.releases[move.release]]
    version = f" as {facts.final_version}" if facts.final_version else ""
    outcome = f" -> {name(move.release)} {facts.state.value}{version} ({move.reason})"
    r = move.release
    if move.unconfirmed:
        stored = _commands(model, after.outbox[r] - before.outbox[r])
        return f"{outcome}; stores {stored}, but the broker does not confirm: they stay in the outbox"
    sent = [m for m in after.network - before.network if len(m) == 3 and m[0] == r]
    return f"{outcome}; sends {_commands(model, sent)}" if sent else outcome


def _commands(model: Model, commands: Iterable[Message]) -> str:
    return ", ".join(f"{m[2].value} to {model.services[m[1]]}" for m in sorted(commands))
