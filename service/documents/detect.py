"""Which format a file is: magic bytes first, the file name / content type second.

Binary formats that are not supported are named in the refusal ("legacy Office file",
"PNG image"); a name that promises a binary format the bytes do not have is reported as
corrupt or mislabeled.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path, PurePosixPath

from service.documents.parse_types import ParseError

__all__ = [
    "BOMS",
    "detect_format",
]

_EXTENSIONS = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".epub": "epub",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".md": "markdown",
    ".markdown": "markdown",
    ".mdown": "markdown",
    ".mkd": "markdown",
    ".txt": "text",
    ".text": "text",
}
_CONTENT_TYPES = {
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/epub+zip": "epub",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/plain": "text",
}
# Binary formats we recognise only to name them in the refusal.
_UNSUPPORTED_MAGIC: tuple[tuple[bytes, str], ...] = (
    (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        "legacy Office file (.doc/.xls/.ppt); save it as DOCX or PDF",
    ),
    (b"{\\rtf", "RTF; save it as DOCX or PDF"),
    (b"\x89PNG\r\n\x1a\n", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF8", "GIF image"),
    (b"II*\x00", "TIFF image"),
    (b"MM\x00*", "TIFF image"),
    (b"Rar!", "RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip archive"),
    (b"\x1f\x8b", "gzip archive"),
    (b"\x7fELF", "executable"),
)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
_HTML_SNIFF = re.compile(
    rb"^(?:\s|<!--.*?-->|<\?xml[^>]*>)*<(?:!doctype\s+html|html[\s>])", re.IGNORECASE | re.DOTALL
)


def detect_format(
    path: str | os.PathLike[str], *, filename: str, content_type: str | None = None
) -> str:
    """Return one of ``FORMATS`` for the file, or raise ``ParseError`` if unsupported.

    Magic bytes win over the name; a name that promises a binary format the bytes do not
    have is reported as corrupt or mislabeled rather than parsed as something else.
    """
    with open(path, "rb") as fh:
        head = fh.read(8192)
    claimed = _claimed_format(filename, content_type)
    if head.lstrip().startswith(b"%PDF-") or (claimed == "pdf" and b"%PDF-" in head[:1024]):
        return "pdf"  # readers accept junk before the header; we only when the name says PDF
    if head.startswith(_ZIP_MAGIC):
        return _zip_format(path, claimed)
    for magic, name in _UNSUPPORTED_MAGIC:
        if head.startswith(magic):
            raise ParseError(f"unsupported file type: {name}")
    if claimed in ("pdf", "docx", "epub"):
        what = "no %PDF header" if claimed == "pdf" else "not a ZIP archive"
        raise ParseError(f"not a valid {claimed.upper()} file ({what}); corrupt or mislabeled")
    if b"\x00" in head and not head.startswith(BOMS):
        raise ParseError("unsupported file type: binary data")
    if claimed in ("html", "markdown"):
        return claimed
    if _HTML_SNIFF.match(head.lstrip(b"\xef\xbb\xbf")):
        return "html"
    return "text"


def _claimed_format(filename: str, content_type: str | None) -> str | None:
    ext = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
    if ext in _EXTENSIONS:
        return _EXTENSIONS[ext]
    mime = (content_type or "").split(";")[0].strip().lower()
    return _CONTENT_TYPES.get(mime)


def _zip_format(path: Path, claimed: str | None) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError) as exc:
        label = claimed.upper() if claimed in ("docx", "epub") else "ZIP"
        raise ParseError(f"corrupt {label} file: damaged ZIP archive ({exc})") from exc
    if "META-INF/container.xml" in names:
        return "epub"
    if "word/document.xml" in names:
        return "docx"
    if "xl/workbook.xml" in names or "ppt/presentation.xml" in names:
        raise ParseError("unsupported file type: Excel/PowerPoint; export it as PDF or DOCX")
    if claimed == "docx":
        raise ParseError("corrupt DOCX file: word/document.xml is missing")
    if claimed == "epub":
        raise ParseError("corrupt EPUB file: META-INF/container.xml is missing")
    raise ParseError("unsupported file type: ZIP archive that is neither DOCX nor EPUB")
