"""Preference job kinds (see ``service.core.jobs``): a version's build and the drafting of
candidates."""
from service.core.jobs import JobKind
from service.models import PreferenceGenerationJob, PreferenceVersion

BUILD = JobKind("preferences.build_version", "ingest", model=PreferenceVersion, id_arg="version_id",
                label="preference version build", running="building", finished=("ready", "failed"))
GENERATE = JobKind("preferences.generate", "generate", model=PreferenceGenerationJob,
                   label="preference candidate generation",
                   queue_of=lambda job: job.queue or "generate")
