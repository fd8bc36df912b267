"""Preference job kinds (see ``service.core.jobs``): a version's build, the drafting of
candidates, and the evaluations on a version's held-out split (reward accuracy, win rate; on
``gpu`` with a local model, else ``generate``)."""
from service.core.jobs import JobKind
from service.models import PreferenceEvalRun, PreferenceGenerationJob, PreferenceVersion

BUILD = JobKind("preferences.build_version", "ingest", model=PreferenceVersion, id_arg="version_id",
                label="preference version build", running="building", finished=("ready", "failed"))
GENERATE = JobKind("preferences.generate", "generate", model=PreferenceGenerationJob,
                   label="preference candidate generation",
                   queue_of=lambda job: job.queue or "generate")
EVALUATE = JobKind("preferences.evaluate", "gpu", model=PreferenceEvalRun, id_arg="run_id",
                   label="preference evaluation", queue_of=lambda run: run.queue or "gpu")
