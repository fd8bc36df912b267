"""Review job kinds (see ``service.core.jobs``): a bulk change or assignment."""
from service.core.jobs import JobKind
from service.models import BulkJob

BULK = JobKind("review.bulk", "ingest", model=BulkJob, label="bulk job",
               finished=("succeeded", "failed"))
