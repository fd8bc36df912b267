from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AliasPath, BaseModel, ConfigDict, Field


class DocumentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    project_id: int
    filename: str
    content_type: str
    format: str
    size_bytes: int
    sha256: str
    status: str
    error: str | None
    page_count: int | None
    chunk_count: int
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


class ChunkRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    document_id: int
    ordinal: int
    text: str
    redacted_text: str | None
    char_start: int
    char_end: int
    page_start: int | None
    page_end: int | None
    heading_path: list[str]
    token_count: int
    content_hash: str
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
    status: str | None = None
    error: str | None = None


class UploadResponse(BaseModel):
    results: list[UploadResult]


class DedupRequest(BaseModel):
    threshold: float = Field(0.8, gt=0, le=1)


class DedupReport(BaseModel):
    report: dict[str, Any] | None
