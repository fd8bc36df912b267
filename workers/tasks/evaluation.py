from __future__ import annotations

from celery import shared_task

from service.evaluation import service as evaluation_service


@shared_task(name="evaluation.run_local", acks_late=True)
def run_local(run_id: int) -> dict:
    """A base model or base+adapter, on the ``gpu`` queue (CPU works, slowly)."""
    return evaluation_service.run_local(run_id)


@shared_task(name="evaluation.endpoint_run", acks_late=True)
def endpoint_run(run_id: int) -> dict:
    """An OpenAI-compatible endpoint, on the ``generate`` queue."""
    return evaluation_service.run_endpoint(run_id)


@shared_task(name="evaluation.sweep")
def sweep() -> list[int]:
    """Resume runs whose worker vanished (also done periodically by every worker's sweeper)."""
    return evaluation_service.sweep_stale_runs()
