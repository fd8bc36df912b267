"""Ingest benchmark: parse + chunk throughput on a generated corpus, on one core.

    python bench/ingest.py --size-mb 50                  # Markdown + text, Chinese + English
    python bench/ingest.py --size-mb 50 --formats        # also PDF/DOCX/EPUB/HTML parse speed
    python bench/ingest.py --database-url sqlite:///bench.db   # also time inserting chunks
    python bench/ingest.py --real /usr/share/debian-reference /usr/share/doc/maint-guide
                                                         # real files (PDF/HTML/...) instead

``--real`` parses (and chunks, markdown strategy) every supported file under the given
files or folders, pinned to one core, best of ``--repeat`` runs per file, and prints per
file: pages/s and MB/s of CPU time, chunks, glued-word chunks and removed page furniture
(from the quality report), then the totals of the whole real corpus. Each PDF is also read
by a bare baseline in the same run, alternating with ``parse_document`` (so both see the same
load): PDFium's text of every page through pypdfium2 and nothing else, the floor that our
clean-up, furniture removal and heading placement add to. The load average before and after
is printed too: on a shared machine, quote it next to the figures. Debian's documentation
packages are real manuals (``apt-get download debian-reference-en debian-reference-zh-cn
maint-guide`` then ``dpkg-deb -x <deb> <folder>``).

The corpus is deterministic (seeded) and written to a temporary folder (or ``--out``).
Throughput is megabytes (10^6 bytes) of file on disk per second, in one process: both per
second of wall time and per second of CPU time (the latter is what one free core would do).
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.documents.chunking import ChunkOut, ChunkSettings, chunk_text
from service.documents.dedup import find_duplicates
from service.documents.parsing import ParsedDocument, parse_document
from service.documents.quality import quality_report
from service.documents.redaction import redact

MB = 1_000_000

# --------------------------------------------------------------------------- corpus

SYLLABLES = (  # noqa: SIM905
    "ka ri to mu se na lo pe vi zu an el or um is et ba co di fu ga he jo ku"
).split()
ENGLISH = (  # noqa: SIM905
    "the of and to in is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when "
    "if so no data model training review sample dataset version export token adapter "
    "quality label annotator project upload document chunk prompt answer question system "
    "evaluation metric"
).split()
HANZI = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过"
    "子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体"
    "制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内"
)


class CorpusWriter:
    """Deterministic Markdown and plain-text files, Chinese and English, ~1 MB each."""

    def __init__(self, seed: int = 2026) -> None:
        self.rng = random.Random(seed)
        vocabulary = ENGLISH * 3 + [
            "".join(self.rng.choice(SYLLABLES) for _ in range(self.rng.randint(2, 4)))
            for _ in range(4000)
        ]
        self.english = [self._english_sentence(vocabulary) for _ in range(6000)]
        self.chinese = [self._chinese_sentence() for _ in range(6000)]

    def _english_sentence(self, vocabulary: list[str]) -> str:
        words = [self.rng.choice(vocabulary) for _ in range(self.rng.randint(6, 24))]
        if self.rng.random() < 0.3:
            words.insert(
                self.rng.randrange(len(words)),
                f"{self.rng.randint(1, 999)}.{self.rng.randint(0, 99)}",
            )
        return " ".join(words).capitalize() + self.rng.choice(".....!?")

    def _chinese_sentence(self) -> str:
        clauses = [
            "".join(self.rng.choice(HANZI) for _ in range(self.rng.randint(4, 14)))
            for _ in range(self.rng.randint(1, 4))
        ]
        return "，".join(clauses) + self.rng.choice("。。。。！？；")

    def paragraph(self, chinese: bool) -> str:
        pool = self.chinese if chinese else self.english
        joiner = "" if chinese else " "
        return joiner.join(self.rng.choice(pool) for _ in range(self.rng.randint(2, 9)))

    def markdown(self, target: int, chinese: bool) -> str:
        parts: list[str] = [f"# {'文档' if chinese else 'Document'} {self.rng.randint(1, 9999)}"]
        size = 0
        section = 0
        while size < target:
            section += 1
            heading = (
                "#" * self.rng.choice((2, 2, 3, 3, 4))
                + f" {'章节' if chinese else 'Section'} {section}"
            )
            block = [heading] + [self.paragraph(chinese) for _ in range(self.rng.randint(1, 6))]
            if self.rng.random() < 0.1:
                block.append("```python\n# a comment, not a heading\nprint('hello')\n```")
            if self.rng.random() < 0.15:
                block.append(
                    "- " + "\n- ".join(self.rng.choice(self.english)[:40] for _ in range(4))
                )
            text = "\n\n".join(block)
            parts.append(text)
            size += len(text.encode())
        return "\n\n".join(parts) + "\n"

    def plain(self, target: int, chinese: bool) -> str:
        parts: list[str] = []
        size = 0
        while size < target:
            text = self.paragraph(chinese)
            parts.append(text)
            size += len(text.encode()) + 2
        return "\n\n".join(parts) + "\n"


def write_corpus(folder: Path, size_mb: float, seed: int = 2026) -> list[Path]:
    """Files of ~1 MB cycling through: md/en, md/zh, txt/en, txt/zh (GB18030-encoded)."""
    writer = CorpusWriter(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    total = 0
    kinds = [("md", False), ("md", True), ("txt", False), ("txt", True)]
    while total < size_mb * MB:
        ext, chinese = kinds[len(files) % len(kinds)]
        text = writer.markdown(MB, chinese) if ext == "md" else writer.plain(MB, chinese)
        path = folder / f"doc{len(files):04d}-{'zh' if chinese else 'en'}.{ext}"
        encoding = "gb18030" if (ext == "txt" and chinese) else "utf-8"
        path.write_bytes(text.encode(encoding))
        files.append(path)
        total += path.stat().st_size
    return files


# --------------------------------------------------------------------------- measurements


@dataclass
class Result:
    label: str
    files: int
    bytes: int
    seconds: float
    cpu_seconds: float
    chunks: int = 0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / MB / self.seconds if self.seconds else float("inf")

    @property
    def mb_per_cpu_s(self) -> float:
        return self.bytes / MB / self.cpu_seconds if self.cpu_seconds else float("inf")


def _cpu_seconds() -> float:
    """This process's CPU time plus that of its finished children: OCR runs Tesseract in a
    subprocess, whose time ``time.process_time`` alone would leave out."""
    t = os.times()
    return time.process_time() + t.children_user + t.children_system


class Timer:
    """Wall-clock and CPU time of a block (CPU time is robust to a busy machine)."""

    def __enter__(self) -> Self:
        self._wall, self._cpu = time.perf_counter(), _cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = _cpu_seconds() - self._cpu


def run_pipeline(
    files: list[Path], settings: ChunkSettings | None
) -> tuple[Result, list[ChunkOut]]:
    """Parse (and chunk, unless ``settings`` is None) every file; time it end to end."""
    all_chunks: list[ChunkOut] = []
    size = 0
    with Timer() as timer:
        for path in files:
            doc = parse_document(path, filename=path.name)
            size += path.stat().st_size
            if settings is not None:
                all_chunks.extend(chunk_text(doc, settings))
    label = "parse only" if settings is None else f"parse + chunk ({settings.strategy})"
    return Result(label, len(files), size, timer.wall, timer.cpu, len(all_chunks)), all_chunks


def time_dedup(chunks: list[ChunkOut]) -> Result:
    items = [(i, c.text) for i, c in enumerate(chunks)]
    find_duplicates(items[:2])  # warm up (imports) outside the timing
    with Timer() as timer:
        clusters = find_duplicates(items)
    size = sum(len(c.text.encode()) for c in chunks)
    return Result(f"dedup ({len(clusters)} clusters)", 0, size, timer.wall, timer.cpu, len(chunks))


def time_redaction(chunks: list[ChunkOut]) -> Result:
    with Timer() as timer:
        for chunk in chunks:
            redact(chunk.text)
    size = sum(len(c.text.encode()) for c in chunks)
    return Result("redact", 0, size, timer.wall, timer.cpu, len(chunks))


def time_database(url: str, chunks: list[ChunkOut]) -> Result:
    """Insert chunks with plain SQLAlchemy Core into a scratch table, then drop it."""
    from sqlalchemy import (
        JSON,
        Column,
        Integer,
        MetaData,
        String,
        Table,
        Text,
        create_engine,
        insert,
    )

    engine = create_engine(url)
    metadata = MetaData()
    table = Table(
        "bench_ingest_chunks",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("ordinal", Integer),
        Column("text", Text),
        Column("char_start", Integer),
        Column("char_end", Integer),
        Column("heading_path", JSON),
        Column("token_count", Integer),
        Column("content_hash", String(64)),
    )
    metadata.drop_all(engine, tables=[table])
    metadata.create_all(engine, tables=[table])
    rows = [
        {
            "ordinal": c.ordinal,
            "text": c.text,
            "char_start": c.char_start,
            "char_end": c.char_end,
            "heading_path": c.heading_path,
            "token_count": c.token_count,
            "content_hash": c.content_hash,
        }
        for c in chunks
    ]
    with Timer() as timer, engine.begin() as conn:
        for i in range(0, len(rows), 1000):
            conn.execute(insert(table), rows[i : i + 1000])
    metadata.drop_all(engine, tables=[table])
    engine.dispose()
    size = sum(len(c.text.encode()) for c in chunks)
    return Result(f"insert ({engine.dialect.name})", 0, size, timer.wall, timer.cpu, len(chunks))


# --------------------------------------------------------------------------- other formats


def write_format_samples(folder: Path, seed: int = 7) -> dict[str, tuple[Path, int]]:
    """One sizeable file per binary/structured format: ``{format: (path, pages_or_blocks)}``."""
    writer = CorpusWriter(seed)
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "pdf": _write_pdf(folder / "sample.pdf", writer, pages=100),
        "docx": _write_docx(folder / "sample.docx", writer, paragraphs=3000),
        "epub": _write_epub(folder / "sample.epub", writer, chapters=40),
        "html": _write_html(folder / "sample.html", writer, sections=400),
    }


def _write_pdf(path: Path, writer: CorpusWriter, pages: int) -> tuple[Path, int]:
    import textwrap

    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    pdf = canvas.Canvas(str(path), pagesize=A4)
    for _ in range(pages):
        y = 800
        text = " ".join(writer.paragraph(False) for _ in range(4))
        for line in textwrap.wrap(text, 95)[:45]:
            pdf.drawString(40, y, line)
            y -= 16
        pdf.showPage()
    pdf.save()
    return path, pages


def _write_docx(path: Path, writer: CorpusWriter, paragraphs: int) -> tuple[Path, int]:
    import docx

    document = docx.Document()
    for i in range(paragraphs):
        if i % 20 == 0:
            document.add_heading(f"Section {i // 20}", level=1 + (i // 20) % 3)
        document.add_paragraph(writer.paragraph(i % 2 == 0))
        if i % 200 == 199:
            table = document.add_table(rows=4, cols=3)
            for cell in table._cells:
                cell.text = writer.rng.choice(writer.english)[:30]
    document.save(str(path))
    return path, paragraphs


def _write_epub(path: Path, writer: CorpusWriter, chapters: int) -> tuple[Path, int]:
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip")
        zf.writestr(
            "META-INF/container.xml",
            '<container xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
            '<rootfile full-path="content.opf"/></rootfiles></container>',
        )
        items = "".join(
            f'<item id="c{i}" href="c{i}.xhtml" media-type="application/xhtml+xml"/>'
            for i in range(chapters)
        )
        spine = "".join(f'<itemref idref="c{i}"/>' for i in range(chapters))
        zf.writestr(
            "content.opf",
            '<package xmlns="http://www.idpf.org/2007/opf"><metadata/>'
            f"<manifest>{items}</manifest><spine>{spine}</spine></package>",
        )
        for i in range(chapters):
            body = "".join(f"<p>{writer.paragraph(i % 2 == 0)}</p>" for _ in range(60))
            zf.writestr(
                f"c{i}.xhtml",
                f'<html xmlns="http://www.w3.org/1999/xhtml"><body><h1>Chapter {i}</h1>{body}</body></html>',
            )
    return path, chapters


def _write_html(path: Path, writer: CorpusWriter, sections: int) -> tuple[Path, int]:
    parts = [
        "<!doctype html><html><head><title>Bench</title><script>var x = 1;</script></head><body><nav>menu</nav>"
    ]
    for i in range(sections):
        parts.append(f"<h2>Section {i}</h2>")
        parts += [f"<p>{writer.paragraph(i % 2 == 0)}</p>" for _ in range(5)]
    parts.append("</body></html>")
    path.write_text("".join(parts), encoding="utf-8")
    return path, sections


def time_formats(folder: Path) -> list[tuple[str, int, int, int, float]]:
    """``(format, file_bytes, text_bytes, pages_or_blocks, cpu_seconds)`` per sample file."""
    rows = []
    for fmt, (path, units) in write_format_samples(folder).items():
        with Timer() as timer:
            doc: ParsedDocument = parse_document(path, filename=path.name)
        rows.append((fmt, path.stat().st_size, len(doc.text.encode()), units, timer.cpu))
    return rows


# --------------------------------------------------------------------------- real documents

REAL_SUFFIXES = (".pdf", ".html", ".htm", ".xhtml", ".epub", ".docx", ".md", ".txt")


def real_files(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        found += [p for p in candidates if p.is_file() and p.suffix.lower() in REAL_SUFFIXES]
    return found


def pin_one_core() -> str:
    """Run on one core (the first one this process may use), where the OS allows it."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return f"pinned to core {core}"


def bare_pdfium_text(path: Path) -> int:
    """The baseline: every page's text through pypdfium2 alone (open, text page, text range,
    close), nothing done with it. Returns the page count."""
    import pypdfium2

    pdf = pypdfium2.PdfDocument(str(path))
    try:
        for index in range(len(pdf)):
            page = pdf[index]
            textpage = page.get_textpage()
            textpage.get_text_range()
            textpage.close()
            page.close()
        return len(pdf)
    finally:
        pdf.close()


def load_average() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def time_real(files: list[Path], repeat: int) -> None:
    """One row per real file, then the corpus totals (CPU time, best of ``repeat``)."""
    print(f"load average (1/5/15 min) before: {load_average()}")
    print(
        "| file | format | MB | pages | parse CPU s | pages/s | bare PDFium pages/s | ours/bare "
        "| MB/s | chunks | glued chunks | furniture pages | TOC pages | warnings |"
    )
    print(
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | --- |"
    )
    total_bytes = total_pages = pdf_pages = 0
    total_cpu = pdf_cpu = chunk_cpu = bare_cpu = 0.0
    for path in files:
        best = bare = float("inf")
        is_pdf = path.suffix.lower() == ".pdf"
        for _ in range(repeat):
            if is_pdf:
                with Timer() as timer:
                    bare_pdfium_text(path)
                bare = min(bare, timer.cpu)
            with Timer() as timer:
                doc = parse_document(path, filename=path.name)
            best = min(best, timer.cpu)
        with Timer() as chunk_timer:
            chunks = chunk_text(doc, ChunkSettings())
        report = quality_report(doc, chunks)
        size = path.stat().st_size
        pages = len(doc.pages)
        total_bytes += size
        total_cpu += best
        chunk_cpu += chunk_timer.cpu
        bare_rate = ratio = ""
        if doc.format == "pdf":
            pdf_pages += pages
            pdf_cpu += best
            if is_pdf:
                bare_cpu += bare
                bare_rate, ratio = f"{pages / bare:.0f}", f"{bare / best:.2f}"
        total_pages += pages
        rate = f"{pages / best:.0f}" if pages else ""
        print(
            f"| {path.name} | {doc.format} | {size / MB:.2f} | {pages or ''} | {best:.3f} | "
            f"{rate} | {bare_rate} | {ratio} | {size / MB / best:.2f} | {len(chunks)} | "
            f"{report['glued_chunks']} | {report.get('furniture_pages', '')} | "
            f"{len(report.get('toc_pages', [])) or ''} | {len(report['warnings']) or ''} |"
        )
    print()
    print(f"load average (1/5/15 min) after: {load_average()}")
    print(
        f"real corpus: {len(files)} files, {total_bytes / MB:.2f} MB, parse {total_cpu:.2f} CPU s"
    )
    print(f"  parse: {total_bytes / MB / total_cpu:.2f} MB/s (CPU)")
    print(f"  parse + chunk: {total_bytes / MB / (total_cpu + chunk_cpu):.2f} MB/s (CPU)")
    if pdf_pages:
        print(
            f"  PDF: {pdf_pages} pages in {pdf_cpu:.2f} CPU s = {pdf_pages / pdf_cpu:.0f} pages/s"
        )
    if bare_cpu:
        print(
            f"  PDF, bare PDFium text alone: {bare_cpu:.2f} CPU s = "
            f"{pdf_pages / bare_cpu:.0f} pages/s (ours takes {pdf_cpu / bare_cpu:.2f}x its time)"
        )


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=50.0, help="corpus size (10^6 bytes)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", type=Path, help="write the corpus here (default: a temp folder)")
    parser.add_argument(
        "--strategies", default="markdown,recursive,tokens", help="comma-separated strategies"
    )
    parser.add_argument("--max-chars", type=int, default=2000)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--formats", action="store_true", help="also time PDF/DOCX/EPUB/HTML")
    parser.add_argument("--database-url", help="also time inserting the chunks (SQLAlchemy Core)")
    parser.add_argument(
        "--real", type=Path, nargs="+", help="time these real files/folders instead of a corpus"
    )
    parser.add_argument("--repeat", type=int, default=3, help="--real: best of N parses per file")
    args = parser.parse_args(argv)

    print("command: python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *sys.argv[1:]]))
    if args.real:
        print(pin_one_core())
        time_real(real_files(args.real), max(args.repeat, 1))
        return
    with tempfile.TemporaryDirectory(prefix="annotune-bench-") as tmp:
        folder = args.out or Path(tmp)
        started = time.perf_counter()
        files = write_corpus(folder / "corpus", args.size_mb, args.seed)
        print(
            f"corpus: {len(files)} files, {sum(f.stat().st_size for f in files) / MB:.1f} MB "
            f"(generated in {time.perf_counter() - started:.1f} s) in {folder / 'corpus'}"
        )
        results: list[Result] = []
        result, _ = run_pipeline(files, None)
        results.append(result)
        markdown_chunks: list[ChunkOut] = []
        for strategy in args.strategies.split(","):
            settings = ChunkSettings(
                strategy=strategy,
                max_chars=args.max_chars,
                max_tokens=args.max_tokens,  # type: ignore[arg-type]
            )
            result, chunks = run_pipeline(files, settings)
            results.append(result)
            if not markdown_chunks:
                markdown_chunks = chunks
        results.append(time_dedup(markdown_chunks))
        results.append(time_redaction(markdown_chunks))
        if args.database_url:
            results.append(time_database(args.database_url, markdown_chunks))
        print()
        print("| step | MB | chunks | wall s | CPU s | MB/s (wall) | MB/s (CPU) |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in results:
            print(
                f"| {r.label} | {r.bytes / MB:.1f} | {r.chunks or ''} | {r.seconds:.2f} | "
                f"{r.cpu_seconds:.2f} | {r.mb_per_s:.2f} | {r.mb_per_cpu_s:.2f} |"
            )
        if args.formats:
            print()
            print(
                "| format | file MB | text MB | pages/blocks | CPU s | text MB/s | pages/blocks per s |"
            )
            print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
            for fmt, file_bytes, text_bytes, units, seconds in time_formats(folder / "formats"):
                print(
                    f"| {fmt} | {file_bytes / MB:.2f} | {text_bytes / MB:.2f} | {units} | "
                    f"{seconds:.2f} | {text_bytes / MB / seconds:.2f} | {units / seconds:.0f} |"
                )


if __name__ == "__main__":
    main()
