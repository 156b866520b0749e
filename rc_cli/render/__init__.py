"""Output of the ``rc`` command line: JSON documents and Rich renderables. Pure functions, no I/O.

- :mod:`~rc_cli.render.data`: the ``--json`` documents;
- :mod:`~rc_cli.render.cells`: states, times and percentages as cells;
- :mod:`~rc_cli.render.releases`: releases, tasks, services and the watch view;
- :mod:`~rc_cli.render.history`: the audit trail, notes and studies;
- :mod:`~rc_cli.render.results`: the table from a result's type to its rendering;
- :mod:`~rc_cli.render.safe`: data as text, never markup, its control characters made visible.
"""

from rc_cli.render.cells import STATE_STYLES, percent, styled_state, when
from rc_cli.render.data import (
    error_json,
    event_page_json,
    note_page_json,
    release_json,
    release_page_json,
    release_result_json,
    service_list_json,
    study_page_json,
    study_result_json,
)
from rc_cli.render.history import (
    actor,
    briefs_table,
    event_line,
    event_page,
    events_table,
    note_heading,
    note_page,
    notes_view,
    studies_table,
    study_details,
    study_page,
)
from rc_cli.render.releases import (
    ordered_tasks,
    release_details,
    release_header,
    release_page,
    release_state_line,
    release_summary,
    releases_table,
    services_table,
    tasks_table,
    version_line,
    watch_view,
)
from rc_cli.render.results import RENDERERS, Part, Renderer, result_json, result_view
from rc_cli.render.safe import plain, visible, visible_block

__all__ = [
    "RENDERERS",
    "STATE_STYLES",
    "Part",
    "Renderer",
    "actor",
    "briefs_table",
    "error_json",
    "event_line",
    "event_page",
    "event_page_json",
    "events_table",
    "note_heading",
    "note_page",
    "note_page_json",
    "notes_view",
    "ordered_tasks",
    "percent",
    "plain",
    "release_details",
    "release_header",
    "release_json",
    "release_page",
    "release_page_json",
    "release_result_json",
    "release_state_line",
    "release_summary",
    "releases_table",
    "result_json",
    "result_view",
    "service_list_json",
    "services_table",
    "studies_table",
    "study_details",
    "study_page",
    "study_page_json",
    "study_result_json",
    "styled_state",
    "tasks_table",
    "version_line",
    "visible",
    "visible_block",
    "watch_view",
    "when",
]
