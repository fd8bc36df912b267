"""Limits for ZIP-based formats (DOCX, EPUB), checked from the central directory before any
member is inflated: member count, total declared size and compression ratio.

CPython's ``zipfile`` never inflates a member past its declared size (it stops there and
fails the CRC check; a test pins this), so checking the declared sizes bounds the memory
actually used.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from service.documents.parse_types import ParseError, ParseLimits, megabytes

__all__ = [
    "check_zip_limits",
    "open_checked_zip",
]


def check_zip_limits(zf: zipfile.ZipFile, limits: ParseLimits) -> None:
    """Refuse archives that would inflate beyond ``limits``, reading only the directory."""
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise ParseError(
            f"archive has {len(infos)} entries, over the limit of {limits.max_members}"
        )
    total = packed = 0
    for info in infos:
        if info.flag_bits & 0x1:
            raise ParseError(f"archive member {info.filename!r} is encrypted")
        total += info.file_size
        packed += info.compress_size
        if total > limits.max_expanded_bytes:
            raise ParseError(
                f"possible zip bomb: archive expands to more than the "
                f"{megabytes(limits.max_expanded_bytes)} limit"
            )
        _check_ratio(info.file_size, info.compress_size, limits, f"member {info.filename!r}")
    _check_ratio(total, packed, limits, "archive")


def _check_ratio(size: int, packed: int, limits: ParseLimits, what: str) -> None:
    if size < limits.ratio_min_bytes:
        return
    ratio = size / max(packed, 1)
    if ratio > limits.max_ratio:
        raise ParseError(
            f"possible zip bomb: {what} has compression ratio {ratio:.0f}:1 "
            f"(limit {limits.max_ratio:g}:1)"
        )


def open_checked_zip(path: Path, limits: ParseLimits, label: str) -> zipfile.ZipFile:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ParseError(f"corrupt {label} file: damaged ZIP archive ({exc})") from exc
    try:
        check_zip_limits(zf, limits)
    except BaseException:
        zf.close()
        raise
    return zf
