"""The profile summary finds the event loop's thread in what py-spy writes today."""

from __future__ import annotations

import json
from pathlib import Path

from bench.lib import profile_summary

LOOP = "/usr/lib/python3.13/asyncio/base_events.py"


def test_the_summary_reads_the_event_loop_thread_with_qualified_frame_names(tmp_path: Path) -> None:
    """py-spy 0.4 names frames ``Class.method`` (``BaseEventLoop._run_once``, ``EpollSelector.select``):
    the summary must still pick the event loop's thread and tell idle samples from busy ones."""
    frames = [
        {"name": "BaseEventLoop._run_once", "file": LOOP},
        {"name": "EpollSelector.select", "file": "/usr/lib/python3.13/selectors.py"},
        {"name": "decide", "file": "/repo/coordinator/machine/step.py"},
        {"name": "Thread.run", "file": "/usr/lib/python3.13/threading.py"},
    ]
    loop = {"samples": [[0, 1], [0, 2], [0, 2], [0, 1]], "weights": [1.0, 1.0, 1.0, 1.0]}
    other = {"samples": [[3]] * 10, "weights": [1.0] * 10}
    path = tmp_path / "run.speedscope.json"
    path.write_text(json.dumps({"shared": {"frames": frames}, "profiles": [other, loop]}))
    summary = profile_summary(path)
    assert summary["samples"] == 4
    assert summary["idle_share"] == 0.5
    assert summary["busy_by_bucket"] == {"coordinator code": 1.0}


def test_the_modules_loading_at_start_up_are_not_counted_as_busy(tmp_path: Path) -> None:
    """A short run's samples are mostly imports: they are start-up, not the coordinator's work."""
    frames = [
        {"name": "BaseEventLoop._run_once", "file": LOOP},
        {"name": "EpollSelector.select", "file": "/usr/lib/python3.13/selectors.py"},
        {"name": "decide", "file": "/repo/coordinator/machine/step.py"},
        {"name": "_call_with_frames_removed", "file": "<frozen importlib._bootstrap>"},
        {"name": "<module>", "file": "/repo/coordinator/settings.py"},
    ]
    samples = [[0, 1], [0, 2], [3, 4], [3, 4], [3, 4], [3, 4]]
    path = tmp_path / "run.speedscope.json"
    path.write_text(json.dumps({"shared": {"frames": frames}, "profiles": [{"samples": samples}]}))
    summary = profile_summary(path)
    assert summary["startup_share"] == round(4 / 6, 4)
    assert summary["idle_share"] == round(1 / 6, 4)
    assert summary["busy_share"] == round(1 / 6, 4)
    assert summary["busy_by_bucket"] == {"coordinator code": 1.0}
