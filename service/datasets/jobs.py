"""Dataset job kinds (see ``service.core.jobs``): a version's build and an export's write."""
from service.core.jobs import JobKind
from service.models import DatasetExport, DatasetVersion

BUILD = JobKind("datasets.build_version", "ingest", model=DatasetVersion, id_arg="version_id",
                label="dataset version build", running="building", finished=("ready", "failed"))
EXPORT = JobKind("datasets.export_version", "ingest", model=DatasetExport, id_arg="export_id",
                 label="dataset export", finished=("ready", "failed"))
