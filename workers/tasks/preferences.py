"""Preference tasks: a version's build, the drafting of candidates. Thin shells over
workers.preferences.runner."""
from __future__ import annotations

from celery import shared_task

from workers.preferences import runner


@shared_task(name="preferences.build_version")
def build_version(version_id: int) -> dict:
    return runner.build_version(version_id)


@shared_task(name="preferences.generate", acks_late=True)
def generate(job_id: int) -> dict:
    return runner.generate(job_id)
