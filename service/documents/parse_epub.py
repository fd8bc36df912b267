"""EPUB: ``zipfile`` + ``lxml`` directly (container.xml -> OPF -> spine order).

Chapters go through the HTML walker (``parse_html.py``); chapters that
``META-INF/encryption.xml`` lists are refused as DRM-protected.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from lxml import etree

from service.documents.parse_html import HtmlWriter, decode_html, html_root, local_name, write_main
from service.documents.parse_text import TextBuilder, clean
from service.documents.parse_types import (
    Deadline,
    ParsedDocument,
    ParseError,
    ParseLimits,
    Progress,
)
from service.documents.zipguard import open_checked_zip

__all__ = [
    "parse_epub",
]

_XML_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, recover=True, huge_tree=False
)
_NS_OPF = "http://www.idpf.org/2007/opf"
_NS_DC = "http://purl.org/dc/elements/1.1/"
_XHTML_TYPES = ("application/xhtml+xml", "text/html", "application/x-dtbook+xml")


def parse_epub(
    path: Path, limits: ParseLimits, deadline: Deadline, progress: Progress
) -> ParsedDocument:
    """Spine order; ``progress`` counts chapters."""
    with open_checked_zip(path, limits, "EPUB") as zf:
        opf_path = _epub_rootfile(zf)
        opf = _xml(zf, opf_path)
        if opf is None:
            raise ParseError(f"corrupt EPUB file: package document {opf_path!r} is unreadable")
        chapters = _epub_spine(opf, opf_path)
        _refuse_drm(zf, chapters)
        builder = TextBuilder()
        writer = HtmlWriter(builder, deadline)
        chapter_starts: list[dict[str, Any]] = []
        progress.start(len(chapters))
        for index, href in enumerate(chapters, start=1):
            deadline.check(f"chapter {index} of {len(chapters)}")
            body = _epub_chapter_body(zf, href)
            if body is not None:
                start = builder.length
                write_main(writer, body, is_body=True)
                if builder.length > start:
                    chapter_starts.append({"href": href, "char_start": start + (2 if start else 0)})
            progress.advance()
    metadata = _epub_metadata(opf)
    metadata["chapters"] = chapter_starts
    return ParsedDocument(
        text=builder.text(), format="epub", headings=builder.headings, metadata=metadata
    )


def _xml(zf: zipfile.ZipFile, name: str) -> etree._Element | None:
    try:
        data = zf.read(name)
    except KeyError:
        return None
    if not data.strip():
        return None
    return etree.fromstring(data, _XML_PARSER)


def _epub_rootfile(zf: zipfile.ZipFile) -> str:
    container = _xml(zf, "META-INF/container.xml")
    if container is None:
        raise ParseError("corrupt EPUB file: META-INF/container.xml is missing or unreadable")
    for el in container.iter():
        if local_name(el.tag) == "rootfile" and el.get("full-path"):
            return el.get("full-path")
    raise ParseError("corrupt EPUB file: container.xml names no package document")


def _epub_spine(opf: etree._Element, opf_path: str) -> list[str]:
    base = PurePosixPath(opf_path).parent
    manifest: dict[str, tuple[str, str]] = {}
    for item in opf.iter(f"{{{_NS_OPF}}}item", "item"):
        if item.get("id") and item.get("href"):
            manifest[item.get("id")] = (item.get("href"), item.get("media-type", ""))
    chapters: list[str] = []
    for ref in opf.iter(f"{{{_NS_OPF}}}itemref", "itemref"):
        href, media = manifest.get(ref.get("idref", ""), ("", ""))
        if href and (media in _XHTML_TYPES or not media):
            chapters.append(_join_zip_path(base, href))
    if not chapters:
        raise ParseError("corrupt EPUB file: the spine lists no readable chapters")
    return chapters


def _join_zip_path(base: PurePosixPath, href: str) -> str:
    from urllib.parse import unquote

    parts: list[str] = []
    for part in (base / unquote(href.split("#", 1)[0])).parts:
        if part == "..":
            if parts:
                parts.pop()
        elif part not in (".", ""):
            parts.append(part)
    return "/".join(parts)


_NAMED_ENTITY = re.compile(rb"&([A-Za-z][A-Za-z0-9]{1,31});")
_XML_ENTITIES = frozenset({b"amp", b"lt", b"gt", b"quot", b"apos"})


def _numeric_entities(data: bytes) -> bytes:
    """``&nbsp;`` -> ``&#160;``: XHTML chapters use HTML entities that only the DTD (which
    we never load) defines, and the XML parser would drop them."""
    from html.entities import name2codepoint

    def replace(m: re.Match[bytes]) -> bytes:
        name = m.group(1)
        if name in _XML_ENTITIES:
            return m.group(0)
        code = name2codepoint.get(name.decode("ascii"))
        return b"&#%d;" % code if code is not None else m.group(0)

    return _NAMED_ENTITY.sub(replace, data)


def _refuse_drm(zf: zipfile.ZipFile, chapters: list[str]) -> None:
    """Encrypted chapters (DRM) parse as garbage; font obfuscation alone is harmless."""
    encryption = _xml(zf, "META-INF/encryption.xml")
    if encryption is None:
        return
    encrypted = {
        _join_zip_path(PurePosixPath(""), el.get("URI", ""))
        for el in encryption.iter()
        if local_name(el.tag) == "cipherreference"
    }
    if encrypted.intersection(chapters):
        raise ParseError("EPUB is DRM-protected (its chapters are encrypted)")


def _epub_chapter_body(zf: zipfile.ZipFile, name: str) -> etree._Element | None:
    try:
        data = zf.read(name)
    except KeyError:
        return None
    root = etree.fromstring(_numeric_entities(data), _XML_PARSER) if data.strip() else None
    if root is None:  # not well-formed even with recovery: fall back to the HTML parser
        root = html_root(clean(decode_html(data)[0]))
    for el in root.iter():
        if local_name(el.tag) == "body":
            return el
    return root


def _epub_metadata(opf: etree._Element) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    for key, tag in (("title", "title"), ("author", "creator"), ("language", "language")):
        el = opf.find(f".//{{{_NS_DC}}}{tag}")
        if el is not None and el.text and el.text.strip():
            metadata[key] = el.text.strip()
    return metadata
