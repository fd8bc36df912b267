from __future__ import annotations

from celery import shared_task

from workers.evaluation import runner


@shared_task(name="evaluation.run_local", acks_late=True)
def run_local(run_id: int) -> dict:
    """A base model or base+adapter, on the ``gpu`` queue (CPU works, slowly)."""
    return runner.run_local(run_id)


@shared_task(name="evaluation.endpoint_run", acks_late=True)
def endpoint_run(run_id: int) -> dict:
    """An OpenAI-compatible endpoint, on the ``generate`` queue."""
    return runner.run_endpoint(run_id)
