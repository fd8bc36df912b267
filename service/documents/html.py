"""Find the main content of an HTML page and the navigation inside it, by structure.

Pure functions on an lxml tree, used by ``parsing._parse_html`` (and EPUB chapters).
Nothing here knows one site's class names; the signals are the ones every generator emits:

- ``<main>``/``role=main``, or a single ``<article>``, is the main content when present.
- Otherwise the main content is found by descending from ``<body>`` into the child that
  holds at least ``DOMINANT_SHARE`` of the text that is not link text, as long as there is
  one: DocBook, Sphinx, MkDocs and most CMS pages wrap the text in one element and put the
  navigation bars, breadcrumbs and footers beside it, so those are left out.
- Inside the main content, a container (``div``, ``dl``, ``ul``, ``ol``, ``section``,
  ``aside``, ``nav``...) with at least ``MIN_LINKS`` links, whose text is at least
  ``LINK_DENSITY`` link text and whose other text is about a character per link
  (separators, a "Table of Contents" label) is navigation: a table of contents,
  breadcrumbs, "prev / next" bars, tag clouds. It is dropped. Tables are never judged this
  way (a table of package names is all links and is content), nor blocks holding code.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DOMINANT_SHARE",
    "LINK_DENSITY",
    "MIN_LINKS",
    "TextStats",
    "find_main",
    "navigation_blocks",
]

DOMINANT_SHARE = 0.7
LINK_DENSITY = 0.75
MIN_LINKS = 3
# fmt: off
_CONTAINERS = frozenset({
    "div", "dl", "ul", "ol", "section", "aside", "nav", "menu", "header", "footer", "center",
})
_NO_TEXT = frozenset({
    "script", "style", "noscript", "template", "svg", "math", "head", "title", "form", "button",
    "select", "textarea",
})
# fmt: on


def _local(tag: Any) -> str | None:
    if not isinstance(tag, str):
        return None
    return tag.rsplit("}", 1)[-1].lower()


def _length(text: str | None) -> int:
    return len(text.strip()) if text else 0


class TextStats:
    """Text length and link-text length of every element of a tree (one pass, bottom up)."""

    def __init__(self, root: Any) -> None:
        total: dict[Any, int] = {}
        links: dict[Any, int] = {}
        anchors: dict[Any, int] = {}
        for el in reversed(list(root.iter())):  # descendants before their ancestors
            tag = el.tag
            if not isinstance(tag, str) or tag.rsplit("}", 1)[-1].lower() in _NO_TEXT:
                total[el] = links[el] = anchors[el] = 0
                continue
            text = el.text
            size, linked, count = (len(text.strip()) if text else 0), 0, 0
            for child in el:
                tail = child.tail
                size += total[child] + (len(tail.strip()) if tail else 0)
                linked += links[child]
                count += anchors[child]
            if tag[-1] in "aA" and _local(tag) == "a" and el.get("href") is not None:
                linked, count = size, count + 1
            total[el], links[el], anchors[el] = size, linked, count
        self.total, self.links, self.anchors = total, links, anchors

    def own_text(self, el: Any) -> int:
        """Text that is not link text."""
        return self.total.get(el, 0) - self.links.get(el, 0)


def find_main(body: Any, stats: TextStats) -> Any:
    """The element under ``body`` that holds most of its non-link text (``body`` itself
    when no single child does)."""
    node = body
    while True:
        own = stats.own_text(node)
        if own <= 0:
            return node
        best = max(
            (child for child in node if _local(child.tag) is not None),
            key=stats.own_text,
            default=None,
        )
        if best is None or stats.own_text(best) < DOMINANT_SHARE * own:
            return node
        if _local(best.tag) in ("pre", "table", "p", "ul", "ol", "dl"):
            return node  # one block holds the text: keep its context (headings beside it)
        node = best


def navigation_blocks(root: Any, stats: TextStats) -> set[Any]:
    """Link-dense containers under ``root`` (outermost ones only)."""
    found: set[Any] = set()
    for el in root.iter():
        tag = _local(el.tag)
        if tag not in _CONTAINERS or el is root:
            continue
        total, anchors = stats.total.get(el, 0), stats.anchors.get(el, 0)
        if total == 0 or anchors < MIN_LINKS:
            continue
        dense = stats.links.get(el, 0) >= LINK_DENSITY * total
        if dense and stats.own_text(el) <= anchors + 20 and not _inside(el, found):
            holds_content = any(_local(d.tag) in ("pre", "table") for d in el.iter())
            if not holds_content:
                found.add(el)
    return found


def _inside(el: Any, found: set[Any]) -> bool:
    parent = el.getparent()
    while parent is not None:
        if parent in found:
            return True
        parent = parent.getparent()
    return False
