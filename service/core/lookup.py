"""One lookup of a row that belongs to a project: by id, or 404 (a path's resource) or ``None``
(a body's reference, refused with a 422 naming its field by the caller).

A row of another project is not found, exactly as a row that does not exist: a project's ids
reveal nothing about another's. ``shared``: rows with no project (built-in providers and
templates) belong to every project.
"""
from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy.orm import Session

from service.core.errors import NotFound

T = TypeVar("T")


def in_project(db: Session, model: type[T], row_id: Any, *, project_id: int,
               shared: bool = False) -> T | None:
    """The ``model`` row ``row_id`` if it belongs to the project, else ``None``."""
    if row_id is None or isinstance(row_id, bool):
        return None
    row = db.get(model, row_id)
    if row is None:
        return None
    owner: Any = getattr(row, "project_id", None)
    if owner == project_id or (shared and owner is None):
        return row
    return None


def get_in_project(db: Session, model: type[T], row_id: Any, *, project_id: int, what: str,
                   code: str, shared: bool = False) -> T:
    """The ``model`` row ``row_id`` of the project, or ``NotFound("<what> not found", code)``."""
    row = in_project(db, model, row_id, project_id=project_id, shared=shared)
    if row is None:
        raise NotFound(f"{what} not found", code=code)
    return row
