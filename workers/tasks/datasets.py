"""Dataset tasks: build a version, write an export. Thin shells over workers.datasets.runner."""
from __future__ import annotations

from celery import shared_task

from workers.datasets import runner


@shared_task(name="datasets.build_version")
def build_version(version_id: int) -> dict:
    return runner.build_version(version_id)


@shared_task(name="datasets.export_version")
def export_version(export_id: int) -> dict:
    return runner.export_version(export_id)
