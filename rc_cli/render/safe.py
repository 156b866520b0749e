"""Text from releases and services, made safe for an operator's terminal.

Names, tags, notes, reasons, progress notes and service messages come from other people and programs. They
are printed as Rich :class:`~rich.text.Text`, never parsed as markup (``[/bold]`` is printed as written),
and their control characters are made visible as escapes (``\\x1b``, ``\\u202e``): C0 and C1 controls, ESC
(and so every ANSI and OSC sequence), BEL, DEL, and the bidirectional overrides and isolates that reorder what
is shown. Single-line text also shows line breaks and tabs as escapes, so that it cannot forge a line.
"""

from __future__ import annotations

import re

from rich.text import Text

#: What no text from the data may carry to a terminal, whatever the layout.
_CONTROLS = "\x00-\x08\x0b-\x1f\x7f-\x9f"
#: Bidirectional marks, embeddings, overrides and isolates.
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_UNSAFE_IN_BLOCK = re.compile(f"[{_CONTROLS}{_BIDI}]")
_UNSAFE_IN_LINE = re.compile(f"[\t\n{_CONTROLS}{_BIDI}\u2028\u2029]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    character = match.group()
    if character in _NAMED:
        return _NAMED[character]
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """One line: every control character, line break and bidi override as a visible escape."""
    return _UNSAFE_IN_LINE.sub(_escape, text)


def visible_block(text: str) -> str:
    """Text of several lines (a note): line breaks and tabs stay, every other control becomes an escape."""
    return _UNSAFE_IN_BLOCK.sub(_escape, text)


def plain(text: str, style: str = "") -> Text:
    """One line of data as Rich text: never markup, controls visible."""
    return Text(visible(text), style=style)
