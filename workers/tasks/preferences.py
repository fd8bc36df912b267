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


@shared_task(name="preferences.evaluate", acks_late=True)
def evaluate(run_id: int) -> dict:
    """Reward accuracy or judged win rate on a preference version (gpu with a local model)."""
    from workers.evaluation import preference  # lazy: its local models import torch when used

    return preference.run(run_id)
