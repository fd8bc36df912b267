"""ORM models, one module per aggregate. Models never import domain code."""
from service.models.audit import AuditEvent
from service.models.counters import ProjectSampleCount
from service.models.dataset import Dataset, DatasetExport, DatasetVersion, DatasetVersionItem
from service.models.diversity import DiversityJob, DomainNode, GAPair
from service.models.document import Chunk, Document
from service.models.evaluation import EvalPrediction, EvalRun
from service.models.generation import GenerationJob, GenerationUnit, LLMProvider, PromptTemplate
from service.models.invitation import Invitation
from service.models.job import (
    STATUS_ENUMS,
    BuildStatus,
    BulkStatus,
    DocumentStatus,
    ExportStatus,
    ImportStatus,
    JobStatus,
    TrainingStatus,
    UnitStatus,
)
from service.models.preference import (
    PreferenceCandidate,
    PreferenceDecision,
    PreferenceGenerationJob,
    PreferenceItem,
    PreferenceLease,
    PreferenceVersion,
    PreferenceVersionItem,
)
from service.models.preference_eval import PreferenceEvalItem, PreferenceEvalRun
from service.models.project import ROLE_RANK, Membership, Project, Role
from service.models.review import BulkJob, ReviewDecision, ReviewLease
from service.models.sample import ImportJob, Sample, SampleRevision, SampleStatus
from service.models.training import JobEvent, TrainingJob
from service.models.user import ApiToken, RateCounter, User, WebSession

__all__ = [
    "ROLE_RANK",
    "STATUS_ENUMS",
    "ApiToken",
    "AuditEvent",
    "BuildStatus",
    "BulkJob",
    "BulkStatus",
    "Chunk",
    "Dataset",
    "DatasetExport",
    "DatasetVersion",
    "DatasetVersionItem",
    "DiversityJob",
    "Document",
    "DocumentStatus",
    "DomainNode",
    "EvalPrediction",
    "EvalRun",
    "ExportStatus",
    "GAPair",
    "GenerationJob",
    "GenerationUnit",
    "ImportJob",
    "ImportStatus",
    "Invitation",
    "JobEvent",
    "JobStatus",
    "LLMProvider",
    "Membership",
    "PreferenceCandidate",
    "PreferenceDecision",
    "PreferenceEvalItem",
    "PreferenceEvalRun",
    "PreferenceGenerationJob",
    "PreferenceItem",
    "PreferenceLease",
    "PreferenceVersion",
    "PreferenceVersionItem",
    "Project",
    "ProjectSampleCount",
    "PromptTemplate",
    "RateCounter",
    "ReviewDecision",
    "ReviewLease",
    "Role",
    "Sample",
    "SampleRevision",
    "SampleStatus",
    "TrainingJob",
    "TrainingStatus",
    "UnitStatus",
    "User",
    "WebSession",
]
