"""DOCX: ``python-docx`` opens the package; the WordprocessingML elements are walked directly.

Page headers and footers first, then the body (text boxes after the block they are anchored
in), then ``# Footnotes`` and ``# Endnotes``. See ``parsing.py`` for the order and why.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lxml import etree

from service.documents.parse_text import TextBuilder, clean, markdown_table
from service.documents.parse_types import (
    Deadline,
    ParsedDocument,
    ParseError,
    ParseLimits,
    Progress,
)
from service.documents.zipguard import open_checked_zip

__all__ = [
    "parse_docx",
]

_HEADING_STYLE = re.compile(r"^heading\s*(\d)$", re.IGNORECASE)
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC = "{http://schemas.openxmlformats.org/markup-compatibility/2006}"
_R = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_W_P, _W_TBL, _W_R, _W_HYPERLINK = f"{_W}p", f"{_W}tbl", f"{_W}r", f"{_W}hyperlink"
_W_SDT, _W_SDT_CONTENT, _W_TXBX = f"{_W}sdt", f"{_W}sdtContent", f"{_W}txbxContent"
_NOTE_REFS = {f"{_W}footnoteReference": "footnote", f"{_W}endnoteReference": "endnote"}
_NOTES_RELTYPE = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/{}s"


def parse_docx(
    path: Path, limits: ParseLimits, deadline: Deadline, progress: Progress
) -> ParsedDocument:
    """Page headers and footers, then the body, then footnotes and endnotes.

    Headers and footers repeat on every page, so no one place in the running text is
    theirs: they come first, before any heading (their chunks carry an empty heading path
    and never join the body's last section), each distinct part once (sections that link
    to the previous section's header share its part). Text boxes follow the paragraph (or
    table) they are anchored in. ``progress`` counts blocks against the body's top-level
    elements (headers, notes and text boxes count too, so the count is an estimate that stops
    at the total).
    """
    open_checked_zip(path, limits, "DOCX").close()
    import docx

    try:
        document = docx.Document(str(path))
    except Exception as exc:
        raise ParseError(f"corrupt DOCX file: {type(exc).__name__}: {exc}") from exc
    builder = TextBuilder()
    notes = {kind: _DocxNotes(kind, _docx_notes_root(document, kind)) for kind in _DOCX_NOTES}
    progress.start(len(document.element.body))
    writer = _DocxWriter(builder, _docx_style_names(document), deadline, notes, progress)
    counts = {
        f"{kind}_parts": writer.parts(_docx_page_parts(document, kind))
        for kind in ("header", "footer")
    }
    writer.container(document.element.body)
    for kind, title in _DOCX_NOTES.items():
        counts[f"{kind}s"] = writer.notes_section(notes[kind], title)
    counts["text_boxes"] = writer.text_boxes
    metadata = _docx_metadata(document)
    read = {key: value for key, value in counts.items() if value}
    if read:
        metadata["docx_parts"] = read
    return ParsedDocument(
        text=clean(builder.text()), format="docx", headings=builder.headings, metadata=metadata
    )


_DOCX_NOTES = {"footnote": "Footnotes", "endnote": "Endnotes"}


class _DocxWriter:
    """Writes WordprocessingML block content (body, header, footer, note, text box) as blocks.

    Works on the XML elements (python-docx's ``CT_P``/``CT_Tbl``) rather than on its proxy
    objects, because only the body has a proxy container; headers, notes and text boxes
    are plain element trees here.
    """

    def __init__(
        self,
        builder: TextBuilder,
        style_names: dict[str | None, str],
        deadline: Deadline,
        notes: dict[str, _DocxNotes],
        progress: Progress,
    ) -> None:
        self.out = builder
        self.style_names = style_names
        self.deadline = deadline
        self.progress = progress
        self.notes = notes
        self.text_boxes = 0
        self._blocks = 0
        self._mark_notes = any(n.bodies for n in notes.values())

    def parts(self, parts: list[Any]) -> int:
        """Write header or footer parts; return how many of them held text."""
        written = 0
        for part in parts:
            before = self.out.length
            self.container(part.element)
            written += self.out.length > before
        return written

    def container(self, element: Any) -> None:
        # one scan per container; most documents have no text boxes at all
        boxes = next(element.iter(_W_TXBX), None) is not None
        for block in _docx_blocks(element):
            self._blocks += 1
            if self._blocks % 500 == 0:
                self.deadline.check(f"{self._blocks} DOCX blocks")
                self.progress.set(self._blocks)
            if block.tag == _W_TBL:
                self.out.block(markdown_table(self._table_rows(block)))
            else:
                self._paragraph(block)
            if boxes:
                for box in _docx_text_boxes(block):
                    self.text_boxes += 1
                    self.container(box)

    def notes_section(self, notes: _DocxNotes, title: str) -> int:
        """Footnotes or endnotes under their own heading, as ``[^label]: text`` blocks.

        The heading ends the last body section, so chunks of notes do not carry the body's
        last heading path.
        """
        rendered = [(label, self._render(note)) for label, note in notes.in_order()]
        rendered = [(label, text) for label, text in rendered if text]
        if rendered:
            self.out.heading(1, title)
            for label, text in rendered:
                self.out.block(f"[^{label}]: {text}")
        return len(rendered)

    def _render(self, element: Any) -> str:
        outer, self.out = self.out, TextBuilder()
        try:
            self.container(element)
            return self.out.text().strip()
        finally:
            self.out = outer

    def _paragraph(self, p: Any) -> None:
        text = self._paragraph_text(p)
        if not text.strip():
            return
        style = self.style_names.get(p.style, self.style_names[None])  # p.style: w:pStyle
        m = _HEADING_STYLE.match(style)
        if m and int(m.group(1)) > 0:
            self.out.heading(int(m.group(1)), text)
        elif style == "Title":
            self.out.heading(1, text)
        elif style.startswith("List Bullet"):
            self.out.block("- " + text.strip())
        elif style.startswith("List Number"):
            self.out.block("1. " + text.strip())
        else:
            self.out.block(text)

    def _paragraph_text(self, p: Any) -> str:
        """``p.text`` (runs and hyperlinks), with ``[^1]`` where a note is referenced."""
        if not self._mark_notes:
            return p.text
        parts: list[str] = []
        for child in p.iterchildren(_W_R, _W_HYPERLINK):
            for run in [child] if child.tag == _W_R else child.iterchildren(_W_R):
                parts.append(run.text)
                for ref in run.iterchildren(*_NOTE_REFS):
                    parts.append(self.notes[_NOTE_REFS[ref.tag]].mark(ref.get(f"{_W}id")))
        return "".join(parts)

    def _table_rows(self, tbl: Any) -> list[list[str]]:
        from docx.table import Table

        # the parent is only needed to reach the part (images, styles); text needs none
        return [
            [
                "\n".join(self._paragraph_text(p) for p in cell._tc.iterchildren(_W_P))
                for cell in row.cells
            ]
            for row in Table(tbl, None).rows  # type: ignore[arg-type]
        ]


def _docx_blocks(container: Any) -> Iterator[Any]:
    """``w:p`` and ``w:tbl`` children in document order, including those inside block-level
    content controls (``w:sdt``), which python-docx's ``iter_inner_content`` skips."""
    for child in container.iterchildren(_W_P, _W_TBL, _W_SDT):
        if child.tag == _W_SDT:
            for content in child.iterchildren(_W_SDT_CONTENT):
                yield from _docx_blocks(content)
        else:
            yield child


def _docx_text_boxes(block: Any) -> Iterator[Any]:
    """Text boxes anchored in ``block``, each once, in document order.

    Word writes a DrawingML text box inside ``mc:AlternateContent`` with a VML copy of the
    same box in ``mc:Fallback``; the fallback is read only when no ``mc:Choice`` holds a
    text box. Boxes nested in another box are left to the outer box's own walk.
    """
    for box in block.iter(_W_TXBX):
        if not _docx_shadowed(box, block):
            yield box


def _docx_shadowed(box: Any, stop: Any) -> bool:
    for ancestor in box.iterancestors():
        if ancestor is stop:
            return False
        if ancestor.tag == _W_TXBX:
            return True
        if ancestor.tag == f"{_MC}Fallback":
            choices = ancestor.getparent().iterchildren(f"{_MC}Choice")
            if any(next(c.iter(_W_TXBX), None) is not None for c in choices):
                return True
    return False


class _DocxNotes:
    """Footnotes or endnotes, labelled in the order the text first references them.

    Labels follow Word's default number formats: footnotes 1, 2, 3; endnotes i, ii, iii
    (a document's own format or restart settings are not read). Notes that nothing
    references are listed after the referenced ones; separator notes are skipped.
    """

    def __init__(self, kind: str, root: Any | None) -> None:
        self.kind = kind
        self.bodies: dict[str, Any] = {}
        if root is not None:
            for note in root.iterchildren(f"{_W}{kind}"):
                note_id = note.get(f"{_W}id")
                if note_id is not None and note.get(f"{_W}type", "normal") == "normal":
                    self.bodies[note_id] = note
        self.labels: dict[str, str] = {}

    def mark(self, note_id: str | None) -> str:
        if note_id not in self.bodies:
            return ""  # dangling reference: nothing to point at
        label = self.labels.get(note_id)
        if label is None:
            label = self.labels[note_id] = self._label(len(self.labels) + 1)
        return f"[^{label}]"

    def in_order(self) -> list[tuple[str, Any]]:
        for note_id in self.bodies:
            self.mark(note_id)  # unreferenced notes get the next labels
        return [(label, self.bodies[note_id]) for note_id, label in self.labels.items()]

    def _label(self, number: int) -> str:
        return str(number) if self.kind == "footnote" else _roman(number)


def _roman(number: int) -> str:
    out = []
    for value, letters in (
        (1000, "m"),
        (900, "cm"),
        (500, "d"),
        (400, "cd"),
        (100, "c"),
        (90, "xc"),
        (50, "l"),
        (40, "xl"),
        (10, "x"),
        (9, "ix"),
        (5, "v"),
        (4, "iv"),
        (1, "i"),
    ):
        count, number = divmod(number, value)
        out.append(letters * count)
    return "".join(out)


def _docx_notes_root(document: Any, kind: str) -> Any | None:
    """Root of the footnotes or endnotes part (python-docx has no API for them)."""
    from docx.oxml.parser import parse_xml

    for rel in document.part.rels.values():
        if rel.reltype != _NOTES_RELTYPE.format(kind) or rel.is_external:
            continue
        part = rel.target_part
        try:
            return parse_xml(part.blob)  # python-docx's parser: no entities, no network
        except etree.XMLSyntaxError as exc:
            raise ParseError(
                f"corrupt DOCX file: {part.partname} is not valid XML ({exc})"
            ) from exc
    return None


def _docx_page_parts(document: Any, kind: str) -> list[Any]:
    """Header (or footer) parts that some page shows, each once, in section order.

    A section's first-page part counts only when the section has a distinct first page,
    and the even-page part only when the document has distinct odd and even pages: Word
    keeps the others in the file but never shows them.
    """
    even_pages = document.settings.odd_and_even_pages_header_footer
    related = document.part.related_parts
    parts: list[Any] = []
    seen: set[str] = set()
    for section in document.sections:
        refs = {
            ref.get(f"{_W}type", "default"): ref.get(f"{_R}id")
            for ref in section._sectPr.iterchildren(f"{_W}{kind}Reference")
        }
        for page in ("first", "default", "even"):
            if page == "first" and not section.different_first_page_header_footer:
                continue
            if page == "even" and not even_pages:
                continue
            part = related.get(refs.get(page))
            if part is not None and str(part.partname) not in seen:
                seen.add(str(part.partname))
                parts.append(part)
    return parts


def _docx_style_names(document: Any) -> dict[str | None, str]:
    """Paragraph style id -> name, ``None`` -> the default paragraph style's name.

    ``Paragraph.style`` searches the whole style sheet on every call (quadratic on big
    documents: 10 s for 3,000 paragraphs); one lookup table makes it linear.
    """
    from docx.enum.style import WD_STYLE_TYPE

    names: dict[str | None, str] = {}
    for style in document.styles:
        if style.type == WD_STYLE_TYPE.PARAGRAPH and style.style_id:
            names[style.style_id] = style.name or ""
    default = document.styles.default(WD_STYLE_TYPE.PARAGRAPH)
    names[None] = default.name if default is not None else ""
    return names


def _docx_metadata(document: Any) -> dict[str, Any]:
    props = document.core_properties
    metadata: dict[str, Any] = {}
    for key in ("title", "author", "language", "subject"):
        value = getattr(props, key, None)
        if value:
            metadata[key] = str(value)
    if props.created is not None:
        metadata["created"] = props.created.isoformat()
    return metadata
