"""Sample job kinds (see ``service.core.jobs``): a dataset import."""
from service.core.jobs import JobKind
from service.models import ImportJob

IMPORT = JobKind("samples.import", "ingest", model=ImportJob, label="import",
                 finished=("succeeded", "rejected", "failed"))
