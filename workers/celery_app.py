"""The Celery application for workers. Queues: ``ingest``, ``generate``, ``gpu``.

Task modules are thin shells over the runners in ``workers/<domain>/``, which hold their job
under the job kit (``workers/jobs.py``) and call ``service.*`` domain functions. Heavy ML modules
(torch, transformers) are imported lazily inside the runners.
"""
from __future__ import annotations

from celery import Celery
from celery.signals import worker_process_init

from service.core.config import get_settings
from service.core.jobs import bind_worker_app, configure_celery
from service.core.logging import configure_logging

TASK_MODULES = [
    "workers.tasks.system",
    "workers.tasks.documents",
    "workers.tasks.samples",
    "workers.tasks.datasets",
    "workers.tasks.generation",
    "workers.tasks.training",
    "workers.tasks.evaluation",
    "workers.tasks.preferences",
    "workers.tasks.diversity",
]


def _existing(modules: list[str]) -> list[str]:
    import importlib.util

    return [m for m in modules if importlib.util.find_spec(m) is not None]


app = configure_celery(Celery("annotune"), get_settings())
app.conf.include = _existing(TASK_MODULES)
app.conf.imports = app.conf.include
for _module in app.conf.include:
    __import__(_module)
bind_worker_app(app)  # eager mode (scripts, tests) runs tasks through this app, in-process


@worker_process_init.connect
def _reset_db_pool(**_kwargs) -> None:
    """Forked worker processes must not share the parent's database connections."""
    from service.core.db import get_engine

    get_engine().dispose(close=False)
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
