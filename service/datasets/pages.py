from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError

from service.core.deps import ProjectLead, ProjectViewer, SessionDep
from service.core.errors import AppError
from service.core.templating import render
from service.datasets import schemas
from service.datasets import service as datasets_service
from service.models import Role, SampleStatus
from service.projects.pages import add_tab

router = APIRouter(include_in_schema=False)

add_tab("/datasets", "Datasets", order=80)

FORMATS = list(schemas.EXPORT_FORMATS)


def _datasets_page(request: Request, access, db, *, error: str | None = None,
                   status_code: int = 200, cursor: str | None = None) -> HTMLResponse:
    items, nxt = datasets_service.list_datasets(db, project_id=access.project.id, limit=50,
                                                cursor=cursor)
    return render(request, "pages/datasets.html", status_code=status_code, datasets=items,
                  next_cursor=nxt, can_manage=access.at_least(Role.lead), error=error)


@router.get("/projects/{project_id}/datasets", response_class=HTMLResponse)
def datasets_page(request: Request, access: ProjectViewer, db: SessionDep, cursor: str | None = None):
    return _datasets_page(request, access, db, cursor=cursor)


@router.post("/projects/{project_id}/datasets", response_class=HTMLResponse)
def create_dataset_form(request: Request, access: ProjectLead, db: SessionDep,
                        name: Annotated[str, Form()], description: Annotated[str, Form()] = "",
                        default_format: Annotated[str, Form()] = "openai"):
    try:
        with db.begin_nested():
            body = schemas.DatasetCreate(name=name, description=description,
                                         default_format=default_format)
            dataset = datasets_service.create_dataset(
                db, project_id=access.project.id, name=body.name, description=body.description,
                default_format=body.default_format)
    except ValidationError as exc:
        return _datasets_page(request, access, db, error=_first_error(exc), status_code=422)
    except AppError as exc:
        return _datasets_page(request, access, db, error=exc.message, status_code=exc.status_code)
    return RedirectResponse(f"/projects/{access.project.id}/datasets/{dataset.id}", status_code=303)


def _dataset_page(request: Request, access, db, dataset_id: int, *, error: str | None = None,
                  status_code: int = 200) -> HTMLResponse:
    dataset = datasets_service.get_dataset(db, project_id=access.project.id, dataset_id=dataset_id)
    versions, _nxt = datasets_service.list_versions(db, dataset_id=dataset.id, limit=100, cursor=None)
    return render(request, "pages/datasets_detail.html", status_code=status_code, dataset=dataset,
                  versions=versions, can_manage=access.at_least(Role.lead), error=error,
                  statuses=[s.value for s in SampleStatus])


@router.get("/projects/{project_id}/datasets/{dataset_id}", response_class=HTMLResponse)
def dataset_page(request: Request, dataset_id: int, access: ProjectViewer, db: SessionDep):
    return _dataset_page(request, access, db, dataset_id)


def _ids(text: str) -> list[int] | None:
    parts = [p for p in text.replace(",", " ").split() if p]
    return [int(p) for p in parts] if parts else None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', '')}"


@router.post("/projects/{project_id}/datasets/{dataset_id}/versions", response_class=HTMLResponse)
def create_version_form(
    request: Request, dataset_id: int, access: ProjectLead, db: SessionDep,
    status: Annotated[list[str], Form()] = ["accepted"],  # noqa: B006
    tags: Annotated[str, Form()] = "", document_ids: Annotated[str, Form()] = "",
    score_key: Annotated[str, Form()] = "", score_min: Annotated[str, Form()] = "",
    score_max: Annotated[str, Form()] = "", created_from: Annotated[str, Form()] = "",
    created_to: Annotated[str, Form()] = "", train: Annotated[float, Form()] = 0.8,
    validation: Annotated[float, Form()] = 0.1, test: Annotated[float, Form()] = 0.1,
    seed: Annotated[int, Form()] = 0, stratify_by: Annotated[str, Form()] = "",
    reasoning: Annotated[str, Form()] = "omit",
):
    dataset = datasets_service.get_dataset(db, project_id=access.project.id, dataset_id=dataset_id)
    try:
        flt: dict = {"status": status}
        if tags.strip():
            flt["tags"] = [t.strip() for t in tags.split(",") if t.strip()]
        if document_ids.strip():
            flt["document_ids"] = _ids(document_ids)
        if score_key.strip():
            flt["score"] = {"key": score_key.strip(), "min": score_min or None,
                            "max": score_max or None}
        if created_from:
            flt["created_from"] = datetime.fromisoformat(created_from)
        if created_to:
            flt["created_to"] = datetime.fromisoformat(created_to)
        spec = schemas.VersionCreate(filter=flt, split={"train": train, "validation": validation,
                                                        "test": test},
                                     seed=seed, stratify_by=stratify_by or None,
                                     reasoning=reasoning)
    except ValidationError as exc:
        return _dataset_page(request, access, db, dataset_id, error=_first_error(exc),
                             status_code=422)
    except ValueError as exc:
        return _dataset_page(request, access, db, dataset_id, error=str(exc), status_code=422)
    version = datasets_service.create_version(db, dataset=dataset, spec=spec, actor_id=access.user.id)
    return RedirectResponse(
        f"/projects/{access.project.id}/datasets/{dataset.id}/versions/{version.id}", status_code=303)


def _bars(mapping: dict, limit: int = 20) -> list[tuple[str, int, float]]:
    items = list(mapping.items())[:limit]
    top = max((v for _, v in items), default=0) or 1
    return [(str(k), v, round(100 * v / top, 1)) for k, v in items]


@router.get("/projects/{project_id}/datasets/{dataset_id}/versions/{version_id}",
            response_class=HTMLResponse)
def version_page(request: Request, dataset_id: int, version_id: int, access: ProjectViewer,
                 db: SessionDep, message: str | None = None):
    dataset = datasets_service.get_dataset(db, project_id=access.project.id, dataset_id=dataset_id)
    version = datasets_service.get_version(db, project_id=access.project.id, version_id=version_id,
                                           dataset_id=dataset.id)
    others, _ = datasets_service.list_versions(db, dataset_id=dataset.id, limit=100, cursor=None)
    stats = version.stats or {}
    hist = (stats.get("tokens") or {}).get("histogram") or []
    charts = {
        "splits": _bars({s: version.counts.get(s, 0) for s in schemas.SPLITS}),
        "tokens": _bars({f"{h['lo']}–{h['hi'] - 1}": h["count"] for h in hist}, limit=40),
        "turns": _bars(stats.get("turns") or {}),
        "tags": _bars(stats.get("tags") or {}),
        "documents": _bars({f"#{k}": v for k, v in (stats.get("documents") or {}).items()}),
    }
    exports = {e.format: e for e in datasets_service.list_exports(db, version_id=version.id)}
    return render(request, "pages/datasets_version.html", dataset=dataset, version=version,
                  stats=stats, charts=charts, exports=exports, formats=FORMATS,
                  others=[v for v in others if v.id != version.id and v.status == "ready"],
                  can_manage=access.at_least(Role.lead), message=message,
                  splits=schemas.SPLITS)


@router.post("/projects/{project_id}/datasets/{dataset_id}/versions/{version_id}/exports",
             response_class=HTMLResponse)
def create_export_form(request: Request, dataset_id: int, version_id: int, access: ProjectLead,
                       db: SessionDep, format: Annotated[str, Form()]):
    version = datasets_service.get_version(db, project_id=access.project.id, version_id=version_id,
                                           dataset_id=dataset_id)
    datasets_service.create_export(db, version=version, fmt=format)
    return RedirectResponse(
        f"/projects/{access.project.id}/datasets/{dataset_id}/versions/{version.id}",
        status_code=303)


@router.get("/projects/{project_id}/datasets/{dataset_id}/versions/{version_id}/diff/{other_id}",
            response_class=HTMLResponse)
def diff_page(request: Request, dataset_id: int, version_id: int, other_id: int,
              access: ProjectViewer, db: SessionDep):
    dataset = datasets_service.get_dataset(db, project_id=access.project.id, dataset_id=dataset_id)
    a = datasets_service.get_version(db, project_id=access.project.id, version_id=version_id,
                                     dataset_id=dataset.id)
    b = datasets_service.get_version(db, project_id=access.project.id, version_id=other_id,
                                     dataset_id=dataset.id)
    diff = datasets_service.diff_versions(db, a=a, b=b, limit=200)
    return render(request, "pages/datasets_diff.html", dataset=dataset, a=a, b=b, diff=diff)
