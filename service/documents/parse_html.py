"""HTML and XHTML (and EPUB chapters): an lxml tree walked into Markdown-flavoured blocks.

``html.py`` finds the main content and the navigation blocks inside it; ``HtmlWriter``
writes headings, list items, fenced ``pre`` blocks and data tables. See ``parsing.py`` for
what is dropped and why.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lxml import etree
from lxml import html as lxml_html

from service.documents import html
from service.documents.detect import BOMS
from service.documents.parse_text import TextBuilder, clean, decode_text, markdown_table
from service.documents.parse_types import Deadline, ParsedDocument, ParseLimits, Progress

__all__ = [
    "HtmlWriter",
    "decode_html",
    "html_root",
    "local_name",
    "parse_html",
    "write_main",
]

# fmt: off
_SKIP_TAGS = frozenset({
    "script", "style", "noscript", "nav", "template", "svg", "math", "iframe", "object", "embed",
    "canvas", "head", "form", "button", "select", "textarea", "input", "audio", "video", "map",
})
# fmt: on
_SKIP_ROLES = frozenset({"navigation", "banner", "contentinfo", "search"})
_HEADING_TAGS = {f"h{i}": i for i in range(1, 7)}
# fmt: off
_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "body", "center", "dd", "details", "dialog",
    "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "header", "hgroup", "hr",
    "html", "main", "ol", "p", "section", "summary", "ul", "caption", "tbody", "thead", "tfoot",
    "table", "tr", "td", "th",  # reached only inside layout tables
})
# fmt: on
_WS = re.compile(r"\s+")
_MAX_DEPTH = 150  # element nesting the walker follows (Python recursion stays well bounded)
_HTML_PARSER = lxml_html.HTMLParser(huge_tree=True, no_network=True)


def local_name(tag: Any) -> str | None:
    """Lower-case local name of an element tag; None for comments and processing instructions."""
    if not isinstance(tag, str):
        return None
    if tag.startswith("{"):
        tag = tag.rsplit("}", 1)[1]
    return tag.lower()


def _skipped(el: etree._Element, tag: str) -> bool:
    if tag in _SKIP_TAGS:
        return True
    if el.get("hidden") is not None or el.get("aria-hidden") == "true":
        return True
    return el.get("role") in _SKIP_ROLES


class HtmlWriter:
    """Walks an (X)HTML element tree and writes Markdown-ish blocks into a ``TextBuilder``."""

    def __init__(
        self, builder: TextBuilder, deadline: Deadline, progress: Progress | None = None
    ) -> None:
        self.out = builder
        self.deadline = deadline
        # elements written, for an HTML page (an EPUB counts its chapters instead)
        self.progress = progress
        self._inline: list[str] = []
        self._count = 0
        self._depth = 0
        self._lists = 0  # list nesting depth
        self._marker: str | None = None  # list item marker waiting for the item's first block
        self.drop: set[etree._Element] = set()  # navigation blocks (see html.py)
        self.dropped = 0

    def write(self, root: etree._Element, *, drop_site_chrome: bool = False) -> None:
        """Write ``root``'s content; ``drop_site_chrome`` skips its direct header/footer."""
        self.flush()
        self._text(root.text)
        for child in root:
            if not (drop_site_chrome and local_name(child.tag) in ("header", "footer")):
                self._element(child)
            self._text(child.tail)
        self.flush()

    def flush(self) -> None:
        if not self._inline:
            return
        raw = "".join(self._inline)
        self._inline.clear()
        lines = [" ".join(line.split()) for line in raw.split("\n")]
        self._block("\n".join(line for line in lines if line))

    def _block(self, text: str) -> None:
        """A block; the first one of a list item gets the item's marker on its first line."""
        if self._marker is not None and text.strip():
            text, self._marker = self._marker + text.lstrip("\n"), None
        self.out.block(text)

    def _text(self, text: str | None) -> None:
        if text:
            self._inline.append(_WS.sub(" ", text))

    def _children(self, el: etree._Element) -> None:
        self._text(el.text)
        for child in el:
            self._element(child)
            self._text(child.tail)

    def _element(self, el: etree._Element) -> None:
        tag = local_name(el.tag)
        if tag is None or _skipped(el, tag):
            return
        if el in self.drop:
            self.dropped += 1
            return
        if self._depth >= _MAX_DEPTH:  # pathological nesting: keep the text, skip structure
            self._text(" ".join(el.itertext()))
            return
        self._depth += 1
        try:
            self._structured(el, tag)
        finally:
            self._depth -= 1

    def _structured(self, el: etree._Element, tag: str) -> None:
        self._count += 1
        if self._count % 500 == 0:
            self.deadline.check(f"{self._count} HTML elements")
            if self.progress is not None:
                self.progress.set(self._count)
        if tag in _HEADING_TAGS:
            self.flush()
            self.out.heading(_HEADING_TAGS[tag], _inline_text(el))
        elif tag == "pre":
            self.flush()
            self._block(_fenced("".join(el.itertext())))
        elif tag == "table" and not _is_layout_table(el):
            self.flush()
            self._block(markdown_table(_html_table_rows(el)))
        elif tag == "br":
            self._inline.append("\n")
            self._children(el)  # recovered XHTML may hang the following text inside <br>
        elif tag == "li":
            self.flush()
            self._marker = "   " * max(self._lists - 1, 0) + _list_marker(el)
            self._children(el)
            self.flush()
            self._marker = None  # an empty item writes nothing
        elif tag in ("ol", "ul", "menu"):
            self.flush()
            self._lists += 1
            try:
                self._children(el)
            finally:
                self._lists -= 1
            self.flush()
        elif tag in _BLOCK_TAGS:
            self.flush()
            self._children(el)
            self.flush()
        else:
            self._children(el)


def _list_marker(li: etree._Element) -> str:
    """``"- "`` in a ``<ul>``, ``"3. "`` for the third item of an ``<ol>`` (``start`` and
    ``value`` honoured)."""
    parent = li.getparent()
    if parent is None or local_name(parent.tag) != "ol":
        return "- "
    number = _int(parent.get("start"), 1)
    for sibling in parent:
        if local_name(sibling.tag) != "li":
            continue
        number = _int(sibling.get("value"), number)
        if sibling is li:
            break
        number += 1
    return f"{number}. "


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _fenced(code: str) -> str:
    """``pre`` text as a fenced code block (so a ``# command`` line is never a heading)."""
    code = code.strip("\n")
    if not code.strip():
        return ""
    fence = "```"
    while fence in code:
        fence += "`"
    return f"{fence}\n{code}\n{fence}"


def _inline_text(el: etree._Element) -> str:
    parts: list[str] = []

    def walk(node: etree._Element) -> None:
        if node.text:
            parts.append(node.text)
        for child in node:
            tag = local_name(child.tag)
            if tag == "br":
                parts.append(" ")
            elif tag is not None and not _skipped(child, tag):
                walk(child)
            if child.tail:
                parts.append(child.tail)

    walk(el)
    return " ".join("".join(parts).split())


_LAYOUT_MARKERS = frozenset({*_HEADING_TAGS, "p", "div", "ul", "ol", "table", "pre", "section"})


def _is_layout_table(table: etree._Element) -> bool:
    """Tables that hold headings, paragraphs or other tables lay out a page; they are not
    data, so their cells are walked as blocks instead of flattened into a Markdown table."""
    return any(local_name(el.tag) in _LAYOUT_MARKERS for el in table.iterdescendants())


def _html_table_rows(table: etree._Element) -> list[list[str]]:
    rows: list[list[str]] = []
    for tr in table.iter():
        if local_name(tr.tag) != "tr":
            continue
        cells = [_inline_text(c) for c in tr if local_name(c.tag) in ("td", "th")]
        if cells:
            rows.append(cells)
    return rows


_META_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?\s*([A-Za-z0-9_.:-]+)", re.IGNORECASE)
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*\?>")


def decode_html(data: bytes) -> tuple[str, str]:
    if not data.startswith(BOMS):
        m = _META_CHARSET.search(data[:4096])
        if m:
            encoding = m.group(1).decode("ascii").lower()
            if encoding in ("gb2312", "gbk"):
                encoding = "gb18030"  # what browsers do, and a superset of both
            try:
                return data.decode(encoding), encoding
            except (LookupError, UnicodeDecodeError):
                pass
    return decode_text(data)


def parse_html(
    path: Path, limits: ParseLimits, deadline: Deadline, progress: Progress
) -> ParsedDocument:
    """The page's main content; ``progress`` counts its elements (those of navigation blocks
    and hidden parts are skipped, not counted, so the count ends short and finishes at the
    total)."""
    text, encoding = decode_html(path.read_bytes())
    root = html_root(clean(text))
    title_el = root.find(".//title")
    builder = TextBuilder()
    main, is_body = _main_content(root)
    progress.start(sum(1 for _ in main.iter()))
    writer = HtmlWriter(builder, deadline, progress)
    write_main(writer, main, is_body=is_body)
    metadata: dict[str, Any] = {"encoding": encoding}
    if writer.dropped:
        metadata["navigation_blocks_dropped"] = writer.dropped
    if title_el is not None and title_el.text_content().strip():
        metadata["title"] = " ".join(title_el.text_content().split())
    return ParsedDocument(
        text=builder.text(), format="html", headings=builder.headings, metadata=metadata
    )


def html_root(text: str) -> etree._Element:
    text = _XML_DECL.sub("", text, count=1)
    return lxml_html.document_fromstring(
        text if text.strip() else "<html></html>", parser=_HTML_PARSER
    )


def write_main(writer: HtmlWriter, main: etree._Element, *, is_body: bool) -> None:
    """Write the page's main content without its navigation blocks (see ``html.py``)."""
    stats = html.TextStats(main)
    if is_body:
        found = html.find_main(main, stats)
        is_body = found is main
        main = found
    writer.drop = html.navigation_blocks(main, stats)
    writer.write(main, drop_site_chrome=is_body)


def _main_content(root: etree._Element) -> tuple[etree._Element, bool]:
    """The element holding the page's main text: <main>, a single <article>, or <body>."""
    mains = root.xpath("//*[local-name()='main' or @role='main']")
    if mains:
        return mains[0], False
    articles = root.xpath("//*[local-name()='article']")
    if len(articles) == 1:
        return articles[0], False
    bodies = root.xpath("//*[local-name()='body']")
    return (bodies[0], True) if bodies else (root, False)
