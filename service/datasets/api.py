from __future__ import annotations

from fastapi import APIRouter, Response, status
from fastapi.responses import FileResponse
from sqlalchemy import select

from service.core.deps import ProjectLead, ProjectViewer, SessionDep
from service.core.openapi import FILE_MEDIA, file_media, file_response
from service.core.pagination import CursorQ, LimitQ, Page, page
from service.datasets import export as datasets_export
from service.datasets import schemas
from service.datasets import service as datasets_service
from service.models import DatasetExport

router = APIRouter(prefix="/api/v1/projects/{project_id}/datasets", tags=["datasets"])

EXPORT_FILES = file_response(*sorted({FILE_MEDIA[s] for s in (".jsonl", ".json", ".md", ".parquet")}),
                             description="the file (its type from its suffix)")


@router.post("", response_model=schemas.DatasetRead, status_code=status.HTTP_201_CREATED)
def create_dataset(body: schemas.DatasetCreate, access: ProjectLead, db: SessionDep):
    return datasets_service.create_dataset(db, project_id=access.project.id, name=body.name,
                                           description=body.description,
                                           default_format=body.default_format)


@router.get("", response_model=Page[schemas.DatasetRead])
def list_datasets(access: ProjectViewer, db: SessionDep, limit: LimitQ = 50, cursor: CursorQ = None):
    items, nxt = datasets_service.list_datasets(db, project_id=access.project.id, limit=limit,
                                                cursor=cursor)
    return {"items": items, "next_cursor": nxt}


@router.get("/{dataset_id}", response_model=schemas.DatasetRead)
def get_dataset(dataset_id: int, access: ProjectViewer, db: SessionDep):
    return datasets_service.get_dataset(db, project_id=access.project.id, dataset_id=dataset_id)


@router.post("/{dataset_id}/versions", response_model=schemas.VersionRead,
             status_code=status.HTTP_201_CREATED)
def create_version(dataset_id: int, body: schemas.VersionCreate, access: ProjectLead,
                   db: SessionDep):
    """Queue a version; ``datasets.build_version`` builds it after commit (poll its status)."""
    dataset = datasets_service.get_dataset(db, project_id=access.project.id, dataset_id=dataset_id)
    version = datasets_service.create_version(db, dataset=dataset, spec=body, actor_id=access.user.id)
    return version


@router.get("/{dataset_id}/versions", response_model=Page[schemas.VersionRead])
def list_versions(dataset_id: int, access: ProjectViewer, db: SessionDep, limit: LimitQ = 50,
                  cursor: CursorQ = None):
    dataset = datasets_service.get_dataset(db, project_id=access.project.id, dataset_id=dataset_id)
    items, nxt = datasets_service.list_versions(db, dataset_id=dataset.id, limit=limit, cursor=cursor)
    return {"items": items, "next_cursor": nxt}


@router.get("/{dataset_id}/versions/{version_id}", response_model=schemas.VersionRead)
def get_version(dataset_id: int, version_id: int, access: ProjectViewer, db: SessionDep):
    return datasets_service.get_version(db, project_id=access.project.id, version_id=version_id,
                                        dataset_id=dataset_id)


@router.get("/{dataset_id}/versions/{version_id}/diff/{other_id}", response_model=schemas.VersionDiff)
def diff_versions(dataset_id: int, version_id: int, other_id: int, access: ProjectViewer,
                  db: SessionDep, limit: LimitQ = 200):
    a = datasets_service.get_version(db, project_id=access.project.id, version_id=version_id,
                                     dataset_id=dataset_id)
    b = datasets_service.get_version(db, project_id=access.project.id, version_id=other_id,
                                     dataset_id=dataset_id)
    return datasets_service.diff_versions(db, a=a, b=b, limit=limit)


@router.post("/{dataset_id}/versions/{version_id}/exports", response_model=schemas.ExportRead,
             status_code=status.HTTP_202_ACCEPTED)
def create_export(dataset_id: int, version_id: int, body: schemas.ExportCreate,
                  access: ProjectLead, db: SessionDep, response: Response):
    """Idempotent per (version, format): an existing export is returned (200), not redone."""
    version = datasets_service.get_version(db, project_id=access.project.id, version_id=version_id,
                                           dataset_id=dataset_id)
    export, created = datasets_service.create_export(db, version=version, fmt=body.format)
    if not created:
        response.status_code = status.HTTP_200_OK
    return export


@router.get("/{dataset_id}/versions/{version_id}/exports", response_model=Page[schemas.ExportRead])
def list_exports(dataset_id: int, version_id: int, access: ProjectViewer, db: SessionDep,
                 limit: LimitQ = 50, cursor: CursorQ = None):
    """The version's exports, by format."""
    version = datasets_service.get_version(db, project_id=access.project.id, version_id=version_id,
                                           dataset_id=dataset_id)
    return page(db, select(DatasetExport).where(DatasetExport.version_id == version.id),
                DatasetExport.id, limit=limit, cursor=cursor,
                order=(DatasetExport.format,))


@router.get("/{dataset_id}/versions/{version_id}/exports/{fmt}", response_model=schemas.ExportRead)
def get_export(dataset_id: int, version_id: int, fmt: str, access: ProjectViewer, db: SessionDep):
    version = datasets_service.get_version(db, project_id=access.project.id, version_id=version_id,
                                           dataset_id=dataset_id)
    return datasets_service.get_export(db, version_id=version.id, fmt=fmt)


@router.get("/{dataset_id}/versions/{version_id}/exports/{fmt}/download",
            response_class=FileResponse,
            responses=file_response("application/zip", description="the export's zip"))
def download_export(dataset_id: int, version_id: int, fmt: str, access: ProjectViewer,
                    db: SessionDep):
    """The whole export as one zip (deterministic bytes)."""
    version = datasets_service.get_version(db, project_id=access.project.id, version_id=version_id,
                                           dataset_id=dataset_id)
    export = datasets_service.get_export(db, version_id=version.id, fmt=fmt)
    path = datasets_export.zip_path(export)
    return FileResponse(path, media_type="application/zip", filename=export.files["zip"])


@router.get("/{dataset_id}/versions/{version_id}/exports/{fmt}/files/{name}",
            response_class=FileResponse, responses=EXPORT_FILES)
def download_export_file(dataset_id: int, version_id: int, fmt: str, name: str,
                         access: ProjectViewer, db: SessionDep):
    """One file of the export; ``name`` must be one of the files its manifest lists."""
    version = datasets_service.get_version(db, project_id=access.project.id, version_id=version_id,
                                           dataset_id=dataset_id)
    export = datasets_service.get_export(db, version_id=version.id, fmt=fmt)
    path = datasets_export.file_path(export, name)
    return FileResponse(path, media_type=file_media(path.name), filename=name)
