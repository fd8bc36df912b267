"""DOCX beyond the body: headers, footers, footnotes, endnotes, text boxes, content controls.

The files are built here with python-docx, plus raw WordprocessingML where python-docx has no
API (the footnotes and endnotes parts, text boxes, note references, content controls).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import pytest

from service.documents.chunking import ChunkSettings, chunk_text
from service.documents.parsing import ParseError, parse_document
from service.documents.redaction import redact_document

W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
NS = {
    "w": W_NS,
    "r": "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
    "mc": "http://schemas.openxmlformats.org/markup-compatibility/2006",
    "wp": "http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing",
    "a": "http://schemas.openxmlformats.org/drawingml/2006/main",
    "wps": "http://schemas.microsoft.com/office/word/2010/wordprocessingShape",
    "v": "urn:schemas-microsoft-com:vml",
}
DECLS = " ".join(f'xmlns:{prefix}="{uri}"' for prefix, uri in NS.items())

# --------------------------------------------------------------------------- raw XML factories


def _el(xml: str) -> Any:  # a python-docx oxml element
    from docx.oxml import parse_xml

    return parse_xml(xml)


def _box_paragraphs(*texts: str) -> str:
    return "".join(f"<w:p><w:r><w:t>{t}</w:t></w:r></w:p>" for t in texts)


def drawing_box_run(inner: str) -> str:
    """A run holding a text box as Word 2010+ writes it: DrawingML in ``mc:Choice`` and the
    same box again as VML in ``mc:Fallback``."""
    return (
        f'<w:r {DECLS}><mc:AlternateContent><mc:Choice Requires="wps"><w:drawing>'
        '<wp:anchor distT="0" distB="0" distL="0" distR="0" simplePos="0" relativeHeight="1" '
        'behindDoc="0" locked="0" layoutInCell="1" allowOverlap="1">'
        '<wp:simplePos x="0" y="0"/><wp:extent cx="914400" cy="457200"/>'
        '<wp:docPr id="1" name="Text Box 1"/><a:graphic><a:graphicData '
        'uri="http://schemas.microsoft.com/office/word/2010/wordprocessingShape">'
        f"<wps:wsp><wps:txbx><w:txbxContent>{inner}</w:txbxContent></wps:txbx><wps:bodyPr/>"
        "</wps:wsp></a:graphicData></a:graphic></wp:anchor></w:drawing></mc:Choice>"
        '<mc:Fallback><w:pict><v:shape style="width:72pt;height:36pt"><v:textbox>'
        f"<w:txbxContent>{inner}</w:txbxContent></v:textbox></v:shape></w:pict></mc:Fallback>"
        "</mc:AlternateContent></w:r>"
    )


def vml_box_run(inner: str) -> str:
    """A text box as older Word versions (and converted .doc files) write it: VML only."""
    return (
        f'<w:r {DECLS}><w:pict><v:shape style="width:72pt;height:36pt"><v:textbox>'
        f"<w:txbxContent>{inner}</w:txbxContent></v:textbox></v:shape></w:pict></w:r>"
    )


def picture_choice_vml_fallback_run(inner: str) -> str:
    """``mc:Choice`` without a text box (say, a chart), the box only in the fallback."""
    return (
        f'<w:r {DECLS}><mc:AlternateContent><mc:Choice Requires="wps"><w:drawing/>'
        "</mc:Choice><mc:Fallback><w:pict><v:shape><v:textbox>"
        f"<w:txbxContent>{inner}</w:txbxContent></v:textbox></v:shape></w:pict></mc:Fallback>"
        "</mc:AlternateContent></w:r>"
    )


def note_reference_run(kind: str, note_id: int) -> str:
    return (
        f'<w:r {DECLS}><w:rPr><w:rStyle w:val="{kind.capitalize()}Reference"/></w:rPr>'
        f'<w:{kind}Reference w:id="{note_id}"/></w:r>'
    )


def notes_part_xml(kind: str, notes: dict[int, list[str]]) -> bytes:
    """``word/footnotes.xml`` or ``word/endnotes.xml`` with Word's two separator notes."""
    separators = (
        f'<w:{kind} w:type="separator" w:id="-1"><w:p><w:r><w:separator/></w:r></w:p></w:{kind}>'
        f'<w:{kind} w:type="continuationSeparator" w:id="0"><w:p><w:r><w:t>SEPARATOR</w:t>'
        f"</w:r></w:p></w:{kind}>"
    )
    bodies = "".join(
        f'<w:{kind} w:id="{note_id}">'
        # the note's own mark and a space open its first paragraph, as Word writes them
        + f'<w:p><w:r><w:rPr><w:rStyle w:val="{kind.capitalize()}Reference"/></w:rPr>'
        f'<w:{kind}Ref/></w:r><w:r><w:t xml:space="preserve"> {paragraphs[0]}</w:t></w:r></w:p>'
        + _box_paragraphs(*paragraphs[1:])
        + f"</w:{kind}>"
        for note_id, paragraphs in notes.items()
    )
    return f"<w:{kind}s {DECLS}>{separators}{bodies}</w:{kind}s>".encode()


def add_notes_part(document: Any, kind: str, xml: bytes) -> None:
    from docx.opc.constants import CONTENT_TYPE as CT
    from docx.opc.constants import RELATIONSHIP_TYPE as RT
    from docx.opc.packuri import PackURI
    from docx.opc.part import Part

    content_type = CT.WML_FOOTNOTES if kind == "footnote" else CT.WML_ENDNOTES
    reltype = RT.FOOTNOTES if kind == "footnote" else RT.ENDNOTES
    part = Part(PackURI(f"/word/{kind}s.xml"), content_type, xml, document.part.package)
    document.part.relate_to(part, reltype)


# --------------------------------------------------------------------------- documents


def make_docx_with_page_parts(path: Path) -> Path:
    """Three sections: the first has a distinct first page; the second names the first
    section's default header part again; the third links to the previous one (no reference).
    An even-page header is defined but the document does not use odd/even pages."""
    import docx
    from docx.enum.section import WD_SECTION

    document = docx.Document()
    document.add_heading("Introduction", level=1)
    document.add_paragraph("Body text of the first section.")
    document.add_section(WD_SECTION.NEW_PAGE)
    document.add_heading("Details", level=1)
    document.add_paragraph("Body text of the second section.")
    document.add_section(WD_SECTION.NEW_PAGE)
    document.add_paragraph("Body text of the third section.")

    first, second, third = document.sections
    first.different_first_page_header_footer = True
    first.first_page_header.paragraphs[0].text = "Cover page header"
    first.header.paragraphs[0].text = "ACME Corp internal"
    first.footer.paragraphs[0].text = "Questions: 13812345678, help@acme.example"
    first.even_page_header.paragraphs[0].text = "Unused even header"
    for ref in first._sectPr.xpath("w:headerReference[@w:type='default']"):
        second._sectPr.insert(0, _el(ref.xml))  # the same part, named by a second section
    second.different_first_page_header_footer = False
    third.different_first_page_header_footer = False
    document.save(str(path))
    return path


def make_docx_with_text_boxes(path: Path) -> Path:
    import docx

    document = docx.Document()
    document.add_heading("Boxes", level=1)
    anchor = document.add_paragraph("Paragraph holding a box.")
    anchor._p.append(_el(drawing_box_run(_box_paragraphs("Modern box text"))))
    document.add_paragraph("Between the boxes.")
    empty_anchor = document.add_paragraph()  # a paragraph with nothing but the box
    empty_anchor._p.append(_el(vml_box_run(_box_paragraphs("Legacy VML box"))))
    nested = _box_paragraphs("Outer box") + (
        f"<w:p>{drawing_box_run(_box_paragraphs('Inner box'))}</w:p>"
    )
    document.add_paragraph("Nested follows.")._p.append(_el(drawing_box_run(nested)))
    document.add_paragraph("Chart follows.")._p.append(
        _el(picture_choice_vml_fallback_run(_box_paragraphs("Fallback only box")))
    )
    table = document.add_table(rows=1, cols=2)
    table.cell(0, 0).text = "Cell A"
    table.cell(0, 1).paragraphs[0]._p.append(_el(drawing_box_run(_box_paragraphs("Cell box"))))
    document.add_paragraph("The end.")
    document.save(str(path))
    return path


def make_docx_with_notes(path: Path, *, footnotes_xml: bytes | None = None) -> Path:
    import docx

    document = docx.Document()
    document.add_heading("Study", level=1)
    p = document.add_paragraph("Growth was strong")
    p._p.append(_el(note_reference_run("footnote", 7)))  # referenced first: footnote 1
    p.add_run(" and costs fell")
    p._p.append(_el(note_reference_run("footnote", 3)))  # footnote 2
    p.add_run(".")
    table = document.add_table(rows=1, cols=1)
    cell = table.cell(0, 0).paragraphs[0]
    cell.add_run("Cell claim")
    cell._p.append(_el(note_reference_run("footnote", 7)))  # same note again: still 1
    q = document.add_paragraph("See the appendix")
    q._p.append(_el(note_reference_run("endnote", 1)))
    document.add_heading("Outlook", level=2)
    document.add_paragraph("More to come.")
    add_notes_part(
        document,
        "footnote",
        footnotes_xml
        or notes_part_xml(
            "footnote",
            {3: ["Costs per unit."], 7: ["Source: annual report.", "Audited."], 9: ["Orphan."]},
        ),
    )
    add_notes_part(document, "endnote", notes_part_xml("endnote", {1: ["Appendix A."]}))
    document.save(str(path))
    return path


# --------------------------------------------------------------------------- headers, footers


def test_headers_and_footers_read_once_per_part_before_the_body(tmp_path: Path) -> None:
    path = make_docx_with_page_parts(tmp_path / "sections.docx")
    with zipfile.ZipFile(path) as zf:  # the fixture really has three sections, two headers
        xml = zf.read("word/document.xml").decode()
        assert xml.count("<w:sectPr") == 3 and xml.count('w:type="default"') >= 3
    doc = parse_document(path, filename="sections.docx")
    text = doc.text

    for once in ("Cover page header", "ACME Corp internal", "Questions: 13812345678"):
        assert text.count(once) == 1, once
    assert "Unused even header" not in text  # defined, but no page shows it
    order = [
        "Cover page header",
        "ACME Corp internal",
        "Questions:",
        "# Introduction",
        "Body text of the first section.",
        "# Details",
        "Body text of the third section.",
    ]
    positions = [text.index(part) for part in order]
    assert positions == sorted(positions)
    assert doc.metadata["docx_parts"] == {"header_parts": 2, "footer_parts": 1}
    assert [title for _, title, _ in doc.headings] == ["Introduction", "Details"]
    assert doc.pages == []

    chunks = chunk_text(doc, ChunkSettings(max_chars=200))
    furniture = next(c for c in chunks if "ACME Corp internal" in c.text)
    assert furniture.heading_path == []  # page furniture belongs to no section
    assert (furniture.page_start, furniture.page_end) == (None, None)
    assert "Body text" not in furniture.text
    last = next(c for c in chunks if "third section" in c.text)
    assert last.heading_path == ["Details"]


def test_footer_text_is_redacted_with_the_body(tmp_path: Path) -> None:
    doc = parse_document(make_docx_with_page_parts(tmp_path / "s.docx"), filename="s.docx")
    redacted, found = redact_document(doc)
    assert {r.type for r in found} == {"PHONE", "EMAIL"}
    assert "Questions: [PHONE], [EMAIL]" in redacted.text
    assert redacted.headings[0][2] == doc.headings[0][2] + len("[PHONE][EMAIL]") - len(
        "13812345678help@acme.example"
    )


# --------------------------------------------------------------------------- text boxes


def test_text_boxes_read_once_where_anchored(tmp_path: Path) -> None:
    path = make_docx_with_text_boxes(tmp_path / "boxes.docx")
    doc = parse_document(path, filename="boxes.docx")
    text = doc.text

    for box in ("Modern box text", "Legacy VML box", "Outer box", "Inner box", "Cell box"):
        assert text.count(box) == 1, box  # DrawingML and its VML fallback: read once
    assert text.count("Fallback only box") == 1
    order = [
        "# Boxes",
        "Paragraph holding a box.",
        "Modern box text",
        "Between the boxes.",
        "Legacy VML box",
        "Nested follows.",
        "Outer box",
        "Inner box",
        "Chart follows.",
        "Fallback only box",
        "| Cell A |",
        "Cell box",
        "The end.",
    ]
    positions = [text.index(part) for part in order]
    assert positions == sorted(positions)
    assert "| Cell A |  |" in text  # the box is not glued into the table cell
    assert doc.metadata["docx_parts"] == {"text_boxes": 6}


# --------------------------------------------------------------------------- notes


def test_footnotes_and_endnotes_numbered_after_the_body(tmp_path: Path) -> None:
    doc = parse_document(make_docx_with_notes(tmp_path / "notes.docx"), filename="notes.docx")
    text = doc.text

    assert "Growth was strong[^1] and costs fell[^2]." in text
    assert "| Cell claim[^1] |" in text
    assert "See the appendix[^i]" in text
    body, notes = text.split("# Footnotes\n\n")
    assert notes == (
        "[^1]: Source: annual report.\n\nAudited."
        "\n\n[^2]: Costs per unit."
        "\n\n[^3]: Orphan."  # not referenced: listed after the referenced notes
        "\n\n# Endnotes"
        "\n\n[^i]: Appendix A."
    )
    assert body.endswith("More to come.\n\n")
    assert "SEPARATOR" not in text
    assert [(level, title) for level, title, _ in doc.headings] == [
        (1, "Study"),
        (2, "Outlook"),
        (1, "Footnotes"),
        (1, "Endnotes"),
    ]
    assert doc.metadata["docx_parts"] == {"footnotes": 3, "endnotes": 1}

    chunks = chunk_text(doc, ChunkSettings(max_chars=60))
    note_chunk = next(c for c in chunks if "Costs per unit" in c.text)
    assert note_chunk.heading_path == ["Footnotes"]  # not the body's last section
    assert next(c for c in chunks if "More to come" in c.text).heading_path == [
        "Study",
        "Outlook",
    ]


def test_corrupt_footnotes_part_keeps_a_clear_error(tmp_path: Path) -> None:
    path = make_docx_with_notes(tmp_path / "bad.docx", footnotes_xml=b"<w:footnotes><w:footnote")
    with pytest.raises(ParseError) as info:
        parse_document(path, filename="bad.docx")
    assert info.value.reason.startswith("corrupt DOCX file: /word/footnotes.xml is not valid XML")


def test_block_content_controls_are_read(tmp_path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_paragraph("Before the control.")
    document.element.body.insert(
        1,
        _el(
            f"<w:sdt {DECLS}><w:sdtPr/><w:sdtContent><w:p><w:r><w:t>Inside the control</w:t>"
            "</w:r></w:p></w:sdtContent></w:sdt>"
        ),
    )
    document.add_paragraph("After the control.")
    path = tmp_path / "sdt.docx"
    document.save(str(path))
    doc = parse_document(path, filename="sdt.docx")
    assert doc.text == "Before the control.\n\nInside the control\n\nAfter the control."
