"""Document job kinds (see ``service.core.jobs``): parsing a document, deduplicating chunks."""
from service.core.jobs import JobKind, Task
from service.models import Document

PARSE = JobKind("documents.parse", "ingest", model=Document, id_arg="document_id",
                label="document parse", queued="uploaded", running="parsing",
                finished=("parsed", "failed"))
DEDUP = Task("documents.dedup", "ingest")
