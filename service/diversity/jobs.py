"""The diversity domain's job kind (see ``service.core.jobs``): one row kind for building the
domain tree, tagging samples with a leaf, proposing genre–audience pairs and distilling from a
topic (``DiversityJob.kind``); with the in-worker model it runs with the heavy local work."""
from service.core.jobs import JobKind
from service.models import DiversityJob

DIVERSITY = JobKind("diversity.run_job", "generate", model=DiversityJob, label="diversity job",
                    queue_of=lambda job: job.queue or "generate")
