from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from service.core.deps import ProjectViewer, SessionDep
from service.core.templating import render
from service.documents import service as documents_service
from service.models import Role
from service.projects.pages import PROJECT_STATS, add_tab

router = APIRouter(include_in_schema=False)
add_tab("/documents", "Documents", order=10)
PROJECT_STATS.append(documents_service.document_counts)


@router.get("/projects/{project_id}/documents", response_class=HTMLResponse)
def documents_page(request: Request, access: ProjectViewer, db: SessionDep,
                   cursor: str | None = None, status: str | None = None):
    docs, nxt = documents_service.list_documents(db, project_id=access.project.id, status=status,
                                                 limit=100, cursor=cursor)
    return render(request, "pages/documents.html", documents=docs, next_cursor=nxt,
                  can_upload=access.at_least(Role.lead), status=status,
                  dedup=(access.project.settings or {}).get("dedup_report"))


@router.get("/projects/{project_id}/documents/{document_id}", response_class=HTMLResponse)
def document_page(request: Request, document_id: int, access: ProjectViewer, db: SessionDep,
                  cursor: str | None = None):
    doc = documents_service.get_document(db, project_id=access.project.id, document_id=document_id)
    chunks, nxt = documents_service.list_chunks(db, project_id=access.project.id,
                                                document_id=document_id, limit=100, cursor=cursor)
    settings = (doc.meta or {}).get("chunking") or {}
    return render(request, "pages/document.html", doc=doc, chunks=chunks, next_cursor=nxt,
                  can_edit=access.at_least(Role.lead), settings=settings)
