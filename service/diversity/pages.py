"""The coverage page: samples per leaf of the domain tree (a bar each, the accepted share, the
empty leaves, the untagged samples) and, for leads, the tree's editor (add, rename, move,
merge, delete), the genre–audience pairs of each document (propose, edit, add, delete), and
the jobs that build the tree, tag samples and distil from a topic. User text is rendered escaped
(Jinja autoescape; diversity.js only sets textContent/value)."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from service.core.deps import ProjectViewer, SessionDep
from service.core.templating import render
from service.diversity import service as diversity_service
from service.diversity import tree
from service.generation import service as generation_service
from service.models import Document, Role
from service.projects.pages import add_tab

router = APIRouter(include_in_schema=False)
add_tab("/coverage", "Coverage", order=38)


@router.get("/projects/{project_id}/coverage", response_class=HTMLResponse)
def coverage_page(request: Request, access: ProjectViewer, db: SessionDep):
    pid = access.project.id
    report = tree.coverage(db, project_id=pid)
    nodes = [{"id": n.id, "name": n.name, "depth": len(path), "leaf": n.is_leaf,
              "parent_id": n.parent_id, "path": " › ".join(path)}
             for n, path in tree.walk(tree.load(db, project_id=pid))]
    can_manage = access.at_least(Role.lead)
    providers = generation_service.list_providers(db, project_id=pid) if can_manage else []
    documents = dict(db.execute(select(Document.id, Document.filename)
                                .where(Document.project_id == pid).order_by(Document.id)).all())
    return render(request, "pages/coverage.html", report=report, nodes=nodes,
                  can_manage=can_manage, providers=providers, documents=documents,
                  pairs=diversity_service.list_pairs(db, project_id=pid),
                  jobs=diversity_service.list_jobs(db, project_id=pid, limit=10))
