"""Generation's job kinds (see ``service.core.jobs``)."""
from service.core.jobs import JobKind
from service.models import GenerationJob

GENERATION = JobKind("generation.run_job", "generate", model=GenerationJob, label="generation job",
                     queue_of=lambda job: job.queue or "generate")
