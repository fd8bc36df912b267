from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AliasPath, BaseModel, ConfigDict, Field

from service.models import DocumentStatus


class DocumentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    project_id: int
    filename: str
    content_type: str
    format: str
    size_bytes: int
    sha256: str
    status: DocumentStatus
    error: str | None
    page_count: int | None
    chunk_count: int
    progress_total: int | None = Field(
        None, description="Units the parse reads (pages of a PDF, chapters of an EPUB, blocks "
                          "of a DOCX, elements of an HTML page); null until the parser knows.")
    progress_done: int = Field(0, description="Of those, how many are parsed; written every "
                                              "few pages while parsing, equal to "
                                              "progress_total once parsed.")
    started_at: datetime | None = Field(None, description="When a worker took the parse; with "
                                                          "the counts, the page's ETA.")
    finished_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    # from Document.meta["parsed"] (parsing.ParsedDocument.metadata); see documents/ocr.py
    warnings: list[str] = Field(
        default_factory=list, validation_alias=AliasPath("meta", "parsed", "warnings"),
        description="Problems met while parsing that did not fail the document, e.g. a "
                    "scanned page that could not be OCR'd.")
    ocr: dict[str, Any] | None = Field(
        None, validation_alias=AliasPath("meta", "parsed", "ocr"),
        description="Present when some PDF page had no text layer: engine, languages, dpi, "
                    "pages (1-based) whose text came from OCR, skipped_pages, empty_pages.")
    quality: QualityRead | None = Field(
        None, validation_alias=AliasPath("meta", "quality"),
        description="Quality report of the text and chunks; absent until chunked.")


class QualityRead(BaseModel):
    """Per-document quality report (``Document.meta["quality"]``, see documents/quality.py);
    measures that do not apply to the format (pages for HTML) are absent."""
    model_config = ConfigDict(extra="allow")
    warnings: list[str] = Field(default_factory=list,
                                description="Each measure past its threshold, in words.")
    chars: int = 0
    chunks: int = 0
    glued_chunks: int = Field(0, description="Chunks holding a run of 25+ letters without a "
                                             "space, outside URLs and code.")
    glued_chunk_share: float = 0.0
    glued_examples: list[str] = Field(default_factory=list)
    replacement_chars: int = 0
    replacement_share: float = 0.0
    pages: int | None = None
    empty_pages: list[int] = Field(default_factory=list)
    ocr_pages: list[int] = Field(default_factory=list)
    garbled_pages: list[int] = Field(default_factory=list)
    furniture_lines: int = Field(0, description="Running header/footer lines removed.")
    furniture_pages: int = 0
    furniture_share: float = Field(0.0, description="Share of the page text removed as "
                                                    "headers/footers.")
    toc_pages: list[int] = Field(default_factory=list, description="Table-of-contents pages "
                                                                    "left out of the text.")
    dot_leader_lines: int = 0
    hyphens_joined: int = 0
    navigation_blocks_dropped: int | None = None


class ChunkPiece(BaseModel):
    """One chunk the settings would make; ``text == document_text[char_start:char_end]``."""
    ordinal: int
    text: str
    char_start: int
    char_end: int
    page_start: int | None
    page_end: int | None
    heading_path: list[str]
    token_count: int
    content_hash: str


class ChunkRead(ChunkPiece):
    """A stored chunk: the piece, where it belongs, its redaction and what it duplicates."""
    model_config = ConfigDict(from_attributes=True)
    id: int
    document_id: int
    redacted_text: str | None
    duplicate_of_id: int | None
    duplicate_kind: str | None


class ChunkSettingsIn(BaseModel):
    strategy: Literal["markdown", "recursive", "tokens"] | None = None
    max_chars: int | None = Field(None, ge=16, le=1_000_000)
    overlap: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    tokenizer: str | None = None


class UploadResult(BaseModel):
    filename: str
    status_code: int
    document_id: int | None = None
    duplicate: bool = False
    sha256: str | None = None
    status: DocumentStatus | None = None
    error: str | None = None


class UploadResponse(BaseModel):
    results: list[UploadResult]


class DedupRequest(BaseModel):
    threshold: float = Field(0.8, gt=0, le=1)


class DedupReport(BaseModel):
    report: dict[str, Any] | None


class ChunkSettingsRead(BaseModel):
    """The chunk settings in effect (the project's, with the request's override)."""
    strategy: Literal["markdown", "recursive", "tokens"]
    max_chars: int
    overlap: int
    max_tokens: int
    tokenizer: str


class ChunkPreview(BaseModel):
    settings: ChunkSettingsRead
    count: int = Field(description="chunks the settings make")
    chunks: list[ChunkPiece] = Field(description="the first 200 of them")


class DedupQueued(BaseModel):
    queued: bool
