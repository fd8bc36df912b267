"""Evaluation's job kinds (see ``service.core.jobs``): local models run with the heavy work on
``gpu``, endpoints on ``generate``; both drive ``EvalRun`` rows."""
from service.core.jobs import JobKind
from service.models import EvalRun

LOCAL_KINDS = ("base", "adapter")

EVAL_LOCAL = JobKind("evaluation.run_local", "gpu", model=EvalRun, id_arg="run_id",
                     label="evaluation run", select=lambda: EvalRun.model_kind.in_(LOCAL_KINDS))
EVAL_ENDPOINT = JobKind("evaluation.endpoint_run", "generate", model=EvalRun, id_arg="run_id",
                        label="evaluation run", select=lambda: EvalRun.model_kind == "endpoint")


def kind_for(run: EvalRun) -> JobKind:
    return EVAL_LOCAL if run.model_kind in LOCAL_KINDS else EVAL_ENDPOINT
