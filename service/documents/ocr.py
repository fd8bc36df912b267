"""Read the text of scanned PDF pages with OCR (Tesseract), for pages without a text layer.

When it runs: the PDF parser OCRs a page when the page's text layer has fewer than
``MIN_TEXT_CHARS`` (16) non-whitespace characters *and* the page draws an image (an image XObject,
also inside form XObjects, or an inline image), and when its text layer is garbled (over 30%
unmapped glyphs: U+FFFD, private-use or control characters; ``pdf.looks_garbled``), image or
not. Other pages with a text layer are never OCR'd, so
searchable PDFs ("scanned + OCR'd" ones included) cost nothing extra; blank pages and
vector-only drawings are not OCR'd either. When OCR finds text, it replaces the page's
(near-empty) text layer; page numbers, chunk ``page_start``/``page_end`` and outline
headings work as for any other page.

How: ``pypdfium2`` (Apache-2.0/BSD, wheels bundle PDFium, no system packages) renders the page
in grayscale at ``OCR_DPI`` (scaled down to at most ``OCR_MAX_PIXELS``; a page that draws
nothing but images covering under 60% of it, such as a manual's cover logo, only where its images
are: ``_images_only_crop``), and the ``tesseract``
command-line program (``TESSERACT``, looked up on ``PATH``) reads it from stdin and writes the
text to stdout, one process per page, bounded by ``ParseLimits.ocr_page_seconds`` and by what
is left of the file's time budget (``ParseLimits.max_seconds``). Tesseract runs with
``OMP_THREAD_LIMIT=1``: workers parse documents in parallel already. Spaces that Tesseract puts
between Chinese characters are removed.

Languages: ``OCR_LANGUAGES`` (English and Simplified Chinese), intersected with what
``tesseract --list-langs`` reports (asked once per worker process; restart workers after
installing a language); a wanted language that is not installed is listed in
``metadata["ocr"]["missing_languages"]``. Install on Debian/Ubuntu with
``apt-get install tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim``.

What the parsed document records (``ParsedDocument.metadata``, stored as
``Document.meta["parsed"]``):

- ``ocr``: ``engine`` (e.g. ``"tesseract 5.3.0"``, ``None`` when unavailable), ``languages``
  used, ``dpi``, ``pages`` (1-based page numbers whose text came from OCR), and where they
  apply ``empty_pages`` (OCR'd, no text found), ``skipped_pages`` (needed OCR, did not get
  it), ``missing_languages`` and ``unavailable`` (why OCR could not run). Present only when
  some page needed OCR.
- ``warnings``: one line per page that needed OCR and did not get it, e.g.
  ``"page 3: no text layer (scanned image?) and OCR is unavailable: tesseract not found on
  PATH; install tesseract-ocr ..."``, or that timed out / failed.

The documents API (``DocumentRead``) returns both as ``ocr`` and ``warnings``.

Without Tesseract (or without ``pypdfium2``) parsing still succeeds for documents that have
other text: the scanned pages stay empty (their page numbers stay right) and each gets a
warning. A PDF with no text at all cannot be chunked, so it is refused as before, with a
reason that says OCR is unavailable and how to install it. A page whose OCR times out
(``ParseLimits.ocr_page_seconds``) or fails is handled the same way.

Limits: OCR is slow. A dense A4 page takes ~2 s in English and ~4 s in Chinese with
``eng+chi_sim`` (one shared core, Tesseract 5.3), a sparse one under 1 s; so the default
300 s budget covers roughly 75-150 scanned pages, and a longer scan fails with "time budget"
rather than being half-read (the Celery soft time limit of the task, 900 s, still applies).
Layout is Tesseract's automatic page segmentation: multi-column pages come out column by
column, tables as plain lines, no headings. Handwriting, vertical Chinese and traditional
characters (``chi_tra``, not in the default languages) are read poorly or not at all. The
PDF's ``/Rotate`` is honoured; skew is not corrected. Recognition errors are not flagged:
OCR'd text is as good as the scan.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "MIN_TEXT_CHARS",
    "OCR_DPI",
    "OCR_LANGUAGES",
    "OCR_MAX_PIXELS",
    "TESSERACT",
    "OcrEngine",
    "OcrFailed",
    "OcrTimeout",
    "OcrUnavailable",
    "PageRenderer",
    "find_engine",
    "needs_ocr",
    "recognize",
]

#: The Tesseract program: a name looked up on ``PATH`` or a path.
TESSERACT = "tesseract"
#: Wanted OCR languages (Tesseract codes), in priority order; only installed ones are used.
OCR_LANGUAGES: tuple[str, ...] = ("eng", "chi_sim")
#: Rendering resolution; Tesseract is tuned for ~300 dpi.
OCR_DPI = 300
#: Largest rendered page (pixels); bigger pages (posters, drawings) are rendered at lower dpi.
OCR_MAX_PIXELS = 40_000_000
#: A page whose text layer has fewer non-whitespace characters than this (and that has an
#: image) is OCR'd: scans often carry a stray page number or a scanner's stamp as text.
MIN_TEXT_CHARS = 16

INSTALL_HINT = (
    "install tesseract-ocr (Debian/Ubuntu: apt-get install tesseract-ocr tesseract-ocr-eng "
    "tesseract-ocr-chi-sim)"
)


class OcrUnavailable(Exception):
    """OCR cannot run on this machine; ``str(exc)`` says why."""


class OcrFailed(Exception):
    """OCR of one page failed; ``str(exc)`` says why."""


class OcrTimeout(OcrFailed):
    """Tesseract ran past its timeout and was killed."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"OCR timed out after {seconds:.3g} s")
        self.seconds = seconds


@dataclass(frozen=True)
class OcrEngine:
    binary: str
    version: str
    languages: tuple[str, ...]
    missing_languages: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"tesseract {self.version}".strip()


def needs_ocr(text: str) -> bool:
    """True when a page's text layer is empty or nearly so."""
    count = 0
    for ch in text:
        if not ch.isspace():
            count += 1
            if count >= MIN_TEXT_CHARS:
                return False
    return True


def find_engine() -> OcrEngine:
    """The installed Tesseract with the wanted languages, or ``OcrUnavailable``."""
    binary = shutil.which(TESSERACT)
    if binary is None:
        raise OcrUnavailable(f"{TESSERACT} not found on PATH")
    return _probe(binary, tuple(OCR_LANGUAGES))


@functools.lru_cache(maxsize=8)
def _probe(binary: str, wanted: tuple[str, ...]) -> OcrEngine:
    try:
        version = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
        listed = subprocess.run(
            [binary, "--list-langs"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OcrUnavailable(f"{binary} does not run ({type(exc).__name__}: {exc})") from exc
    if listed.returncode != 0:
        detail = (listed.stderr or listed.stdout).strip().splitlines()[-1:] or ["no output"]
        raise OcrUnavailable(f"{binary} --list-langs failed: {detail[0]}")
    # "List of available languages in ...:" then one code per line
    installed = {line.strip() for line in listed.stdout.splitlines()[1:] if line.strip()}
    languages = tuple(lang for lang in wanted if lang in installed)
    missing = tuple(lang for lang in wanted if lang not in installed)
    if not languages:
        raise OcrUnavailable(
            f"tesseract has none of the languages {', '.join(wanted)} "
            f"(installed: {', '.join(sorted(installed)) or 'none'})"
        )
    match = re.search(r"tesseract\s+v?(\S+)", version.stdout + version.stderr)
    return OcrEngine(binary, match.group(1) if match else "", languages, missing)


def recognize(engine: OcrEngine, image: bytes, *, timeout: float, dpi: int) -> str:
    """Text of one page image (PNM bytes), via ``tesseract stdin stdout``."""
    env = dict(os.environ)
    env.setdefault("OMP_THREAD_LIMIT", "1")
    cmd = [
        engine.binary, "stdin", "stdout",
        "-l", "+".join(engine.languages),
        "--dpi", str(dpi),
        "-c", "page_separator=",
    ]  # fmt: skip
    try:
        # run() kills tesseract on timeout and on any exception in the caller's thread
        # (Celery's SoftTimeLimitExceeded included) before re-raising
        done = subprocess.run(
            cmd, input=image, capture_output=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise OcrTimeout(timeout) from exc
    except OSError as exc:
        raise OcrFailed(f"cannot run {engine.binary}: {exc}") from exc
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = lines[-1] if lines else f"exit status {done.returncode}"
        raise OcrFailed(f"tesseract failed: {detail}")
    return tidy(done.stdout.decode("utf-8", "replace"))


_CJK = r"\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_CJK_GAP = re.compile(rf"(?<=[{_CJK}])[ \t]+(?=[{_CJK}])")
_BLANK_LINES = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")


def tidy(text: str) -> str:
    """Tesseract output -> page text: no form feeds, no spaces between Chinese characters,
    at most one blank line in a row, no trailing spaces."""
    text = text.replace("\f", "\n").replace("\r\n", "\n").replace("\x00", "")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = _CJK_GAP.sub("", text)
    return _BLANK_LINES.sub("\n\n", text).strip("\n")


# pdfium is not thread-safe; the parser runs one file per worker process, but keep callers in
# other threads (tests, scripts) from rendering at the same time
PDFIUM_LOCK = threading.Lock()


class PageRenderer:
    """Renders pages of one PDF file to grayscale PNM images; opened on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pdf: Any = None

    def render(self, index: int, *, dpi: int) -> tuple[bytes, int]:
        """``(pnm_bytes, effective_dpi)`` for the page at 0-based ``index``."""
        with PDFIUM_LOCK:
            pdf = self._open()
            page = pdf[index]
            try:
                width, height = page.get_size()  # points, rotation applied
                crop = _images_only_crop(page, width * height)
                width -= crop[0] + crop[2]
                height -= crop[1] + crop[3]
                scale = dpi / 72
                pixels = width * scale * height * scale
                if pixels > OCR_MAX_PIXELS:
                    scale *= (OCR_MAX_PIXELS / pixels) ** 0.5
                bitmap = page.render(scale=scale, crop=crop, grayscale=True, draw_annots=True)
                try:
                    return _pnm(bitmap), max(1, round(scale * 72))
                finally:
                    bitmap.close()
            finally:
                page.close()

    def _open(self) -> Any:
        if self._pdf is None:
            try:
                import pypdfium2
            except ImportError as exc:
                raise OcrUnavailable("pypdfium2 is not installed (pip install pypdfium2)") from exc
            try:
                self._pdf = pypdfium2.PdfDocument(str(self.path))
            except pypdfium2.PdfiumError as exc:
                raise OcrFailed(f"PDFium cannot open the file to render it: {exc}") from exc
        return self._pdf

    def close(self) -> None:
        if self._pdf is not None:
            with PDFIUM_LOCK:
                self._pdf.close()
            self._pdf = None


# a page that draws nothing but images covering less than this share of it is rendered only
# where its images are, plus CROP_MARGIN points around them
CROP_BELOW_SHARE = 0.6
CROP_MARGIN = 18.0


def _images_only_crop(page: Any, area: float) -> tuple[float, float, float, float]:
    """What to cut off the page's sides (left, bottom, right, top, in points) before OCR.

    Nothing, unless the page draws only images, none inside a form XObject, unrotated, and
    they cover less than ``CROP_BELOW_SHARE`` of it (a manual's cover: one logo on a white
    page): then all its text can only be in those images, and Tesseract's time grows with the
    pixels it is given (0.6 s for a blank A4 page at 300 dpi with one logo, 0.16 s of it
    starting up). A scan covers its page and is rendered whole, as is any page that also
    draws paths or text (text converted to outlines is read from the whole page).
    """
    import pypdfium2.raw as pdfium_c

    none = (0.0, 0.0, 0.0, 0.0)
    try:
        if page.get_rotation() % 360:
            return none
        boxes = []
        for obj in page.get_objects(max_depth=4):
            if obj.type != pdfium_c.FPDF_PAGEOBJ_IMAGE or obj.level != 0:
                return none
            boxes.append(obj.get_bounds())
        if not boxes:
            return none
        x0, y0, x1, y1 = page.get_bbox()
        left = max(x0, min(b[0] for b in boxes) - CROP_MARGIN)
        bottom = max(y0, min(b[1] for b in boxes) - CROP_MARGIN)
        right = min(x1, max(b[2] for b in boxes) + CROP_MARGIN)
        top = min(y1, max(b[3] for b in boxes) + CROP_MARGIN)
    except Exception:  # noqa: BLE001 - a damaged page: render it whole
        return none
    if right <= left or top <= bottom or (right - left) * (top - bottom) >= CROP_BELOW_SHARE * area:
        return none
    return (left - x0, bottom - y0, x1 - right, y1 - top)


def _pnm(bitmap: Any) -> bytes:
    """A PDFium bitmap as binary PGM (grayscale) or PPM (colour) bytes."""
    width, height, stride, channels = bitmap.width, bitmap.height, bitmap.stride, bitmap.n_channels
    if channels == 1:
        magic = b"P5"
    elif channels == 3 and bitmap.mode == "RGB":
        magic = b"P6"
    else:
        raise OcrFailed(f"unexpected bitmap format {bitmap.mode!r} from PDFium")
    data = memoryview(bitmap.buffer).cast("B")
    row = width * channels
    if stride == row:
        pixels = bytes(data[: row * height])
    else:
        pixels = b"".join(data[y * stride : y * stride + row] for y in range(height))
    return b"%s\n%d %d\n255\n" % (magic, width, height) + pixels
