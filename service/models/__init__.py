"""ORM models, one module per aggregate. Models never import domain code."""
from service.models.dataset import Dataset, DatasetExport, DatasetVersion, DatasetVersionItem
from service.models.document import Chunk, Document
from service.models.project import ROLE_RANK, Membership, Project, Role
from service.models.sample import ImportJob, Sample, SampleRevision, SampleStatus
from service.models.user import ApiToken, LoginAttempt, User, WebSession
from service.models.review import BulkJob, ReviewDecision
from service.models.generation import GenerationJob, GenerationUnit, LLMProvider, PromptTemplate
from service.models.training import JobEvent, TrainingJob
from service.models.evaluation import EvalPrediction, EvalRun

__all__ = [
    "ApiToken", "Chunk", "Dataset", "DatasetExport", "DatasetVersion", "DatasetVersionItem",
    "Document", "ImportJob", "LoginAttempt", "Membership", "Project", "ROLE_RANK", "Role",
    "Sample", "SampleRevision", "SampleStatus", "User", "WebSession", "ReviewDecision", "BulkJob",
    "GenerationJob", "GenerationUnit", "LLMProvider", "PromptTemplate", "JobEvent", "TrainingJob",
    "EvalPrediction", "EvalRun",
]
