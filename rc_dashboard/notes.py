"""Release notes: markdown from operators, rendered to HTML that cannot run anything.

Two layers, each enough on its own for the cases tested:

1. markdown-it-py (CommonMark) with raw HTML disabled: ``<script>`` in a note is text, and its link
   validation drops ``javascript:``, ``vbscript:``, ``file:`` and ``data:`` URLs;
2. nh3 (the Rust ``ammonia`` sanitizer) then keeps only an allow-list of tags and attributes, links only
   with ``http``, ``https`` and ``mailto`` schemes, and no event handler, style or class.

The page's Content-Security-Policy (no inline script, ``default-src 'none'``) is a third.
"""

from __future__ import annotations

from functools import lru_cache

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup

ALLOWED_TAGS = frozenset(
    {
        "p", "br", "hr", "h4", "h5", "h6", "strong", "em", "del", "s", "code", "pre",
        "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td",
    }
)  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}
URL_SCHEMES = frozenset({"http", "https", "mailto"})
#: ``# Title`` in a note becomes ``<h4>``.
HEADING_SHIFT = 3

_parser = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable(
    ["table", "strikethrough"]
)


@lru_cache(maxsize=2048)
def render_markdown(text: str) -> Markup:
    """``text`` (markdown) as sanitized HTML, safe to put in a page as it is."""
    tokens = _parser.parse(text)
    for token in tokens:  # a note's headings rank below the page's own (h1 page, h2 section, h3 note)
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(int(token.tag[1]) + HEADING_SHIFT, 6)}"
    html = _parser.renderer.render(tokens, _parser.options, {})
    clean = nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(URL_SCHEMES),
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )
    return Markup(clean)  # sanitized just above


__all__ = ["render_markdown"]
