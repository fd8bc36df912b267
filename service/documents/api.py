from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, Response, UploadFile, status
from fastapi.responses import JSONResponse, PlainTextResponse

from service.core import jobs
from service.core.deps import ProjectLead, ProjectViewer, SessionDep
from service.core.errors import TooLarge
from service.core.pagination import CursorQ, LimitQ, Page
from service.documents import schemas
from service.documents import service as documents_service
from service.documents.jobs import DEDUP
from service.models import DocumentStatus

router = APIRouter(prefix="/api/v1/projects/{project_id}", tags=["documents"])


@router.post("/documents", response_model=schemas.UploadResponse, status_code=status.HTTP_201_CREATED)
def upload_documents(access: ProjectLead, db: SessionDep,
                     files: Annotated[list[UploadFile], File(description="one or more files",
                                                             min_length=1)]):
    """Upload many files at once. Each gets its own result; an oversized file is refused (413)
    and nothing of it is kept, without affecting the others."""
    results = []
    for upload in files:
        name = upload.filename or "upload"
        try:
            with db.begin_nested():
                results.append(documents_service.upload_document(
                    db, project_id=access.project.id, filename=name, content_type=upload.content_type,
                    stream=upload.file, actor_id=access.user.id))
        except TooLarge as exc:
            results.append({"filename": name, "status_code": 413, "error": exc.message})
    if results and all(r["status_code"] == 413 for r in results):
        body = {"error": {"code": "too_large", "message": results[0]["error"], "details": [],
                          "results": results}}
        return JSONResponse(body, status_code=413)
    return {"results": results}


@router.get("/documents", response_model=Page[schemas.DocumentRead])
def list_documents(access: ProjectViewer, db: SessionDep, limit: LimitQ = 50, cursor: CursorQ = None,
                   status_: Annotated[DocumentStatus | None, Query(alias="status")] = None):
    items, nxt = documents_service.list_documents(db, project_id=access.project.id,
                                                  status=status_.value if status_ else None,
                                                  limit=limit, cursor=cursor)
    return {"items": items, "next_cursor": nxt}


@router.get("/documents/{document_id}", response_model=schemas.DocumentRead)
def get_document(document_id: int, access: ProjectViewer, db: SessionDep):
    return documents_service.get_document(db, project_id=access.project.id, document_id=document_id)


@router.get("/documents/{document_id}/text", response_class=PlainTextResponse,
            responses={200: {"description": "the parsed text"}})
def get_document_text(document_id: int, access: ProjectViewer, db: SessionDep) -> Response:
    doc = documents_service.get_document(db, project_id=access.project.id, document_id=document_id)
    return PlainTextResponse(doc.text or "")


@router.get("/documents/{document_id}/chunks", response_model=Page[schemas.ChunkRead])
def list_chunks(document_id: int, access: ProjectViewer, db: SessionDep, limit: LimitQ = 100,
                cursor: CursorQ = None):
    items, nxt = documents_service.list_chunks(db, project_id=access.project.id,
                                               document_id=document_id, limit=limit, cursor=cursor)
    return {"items": items, "next_cursor": nxt}


@router.post("/documents/{document_id}/chunk-preview", response_model=schemas.ChunkPreview)
def preview_chunks(document_id: int, body: schemas.ChunkSettingsIn, access: ProjectLead,
                   db: SessionDep) -> dict:
    return documents_service.preview_chunks(db, project_id=access.project.id, document_id=document_id,
                                            override=body.model_dump(exclude_none=True))


@router.post("/documents/{document_id}/rechunk", response_model=schemas.DocumentRead)
def rechunk(document_id: int, body: schemas.ChunkSettingsIn, access: ProjectLead, db: SessionDep):
    return documents_service.rechunk(db, project_id=access.project.id, document_id=document_id,
                                     override=body.model_dump(exclude_none=True))


@router.delete("/documents/{document_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_document(document_id: int, access: ProjectLead, db: SessionDep) -> Response:
    documents_service.delete_document(db, project_id=access.project.id, document_id=document_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/duplicates", response_model=schemas.DedupQueued,
             status_code=status.HTTP_202_ACCEPTED)
def run_dedup(body: schemas.DedupRequest, access: ProjectLead, db: SessionDep) -> dict:
    jobs.enqueue(db, DEDUP, project_id=access.project.id, threshold=body.threshold)
    return {"queued": True}


@router.get("/duplicates", response_model=schemas.DedupReport)
def dedup_report(access: ProjectViewer) -> dict:
    return {"report": (access.project.settings or {}).get("dedup_report")}
