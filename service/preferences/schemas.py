"""API shapes of the preference domain."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.core.jobs import JobLifecycleRead
from service.datasets.schemas import SplitRatios
from service.models import BuildStatus, JobStatus
from service.models.preference import ItemStatus, Outcome

MAX_TEXT = 100_000
EXPORT_FORMATS = ("sharegpt", "alpaca", "trl", "kto")
Text = Annotated[str, Field(max_length=MAX_TEXT)]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: Text


class CandidateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content: Text = Field(min_length=1)
    provenance: dict[str, Any] = Field(default_factory=dict)


class ItemCreate(BaseModel):
    """A comparison item: the prompt (messages ending with a user turn) and its candidates (none
    yet when a generation job is to draft them)."""

    model_config = ConfigDict(extra="forbid")
    prompt: list[Message] = Field(min_length=1, max_length=200)
    candidates: list[CandidateIn] = Field(default_factory=list, max_length=8)
    chunk_id: int | None = None


class ItemImport(BaseModel):
    """Records in TRL's shape (``prompt`` text or messages, ``chosen``/``rejected`` text or one
    assistant message each: a decided pair) or ``{prompt, candidates: [...]}`` (to review)."""

    model_config = ConfigDict(extra="forbid")
    records: list[dict[str, Any]] = Field(min_length=1, max_length=5000)


class ImportResult(BaseModel):
    imported: int
    decided: int
    errors: list[dict[str, Any]]


class FromSamples(BaseModel):
    """Items from accepted SFT samples: the prompt is the sample up to its last user turn, the
    first candidate its accepted answer (round two: a trained model's answer is drafted next)."""

    model_config = ConfigDict(extra="forbid")
    sample_ids: list[int] | None = Field(None, max_length=5000)
    limit: int = Field(1000, ge=1, le=5000)


class CandidateRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    position: int
    content: str
    provenance: dict[str, Any]


class DecisionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    annotator_id: int
    outcome: str
    chosen_id: int | None
    rejected_id: int | None
    edited_text: str | None
    reason: str | None
    created_at: datetime


class ItemRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    project_id: int
    prompt: list[dict[str, str]]
    chunk_id: int | None
    document_id: int | None
    sample_id: int | None
    source: str
    status: ItemStatus
    outcome: Outcome | None
    chosen_id: int | None
    rejected_id: int | None
    chosen_text: str | None
    judge: dict[str, Any] | None = Field(None, description=(
        "an LLM judge's pre-ranking of the pair shown: chosen_id/rejected_id (null: a tie or "
        "the two orders disagreed), score of the first shown, verdicts in both orders"))
    created_at: datetime
    candidates: list[CandidateRead] = []


class DecisionCreate(BaseModel):
    """``preferred``: ``chosen_id`` over ``rejected_id``; ``tie``/``both_bad``: the two candidates
    compared (``chosen_id``/``rejected_id`` name them, optional for a two-candidate item).
    ``edited_text``: the preferred answer as the annotator corrected it (becomes the chosen text)."""

    model_config = ConfigDict(extra="forbid")
    outcome: Literal["preferred", "tie", "both_bad"]
    chosen_id: int | None = None
    rejected_id: int | None = None
    edited_text: Text | None = None
    reason: Annotated[str, Field(max_length=2000)] | None = None

    @model_validator(mode="after")
    def _chosen(self) -> DecisionCreate:
        if self.outcome == "preferred" and self.chosen_id is None:
            raise ValueError("a preference names the chosen candidate (chosen_id)")
        if self.outcome != "preferred" and self.edited_text:
            raise ValueError("only a preferred candidate can be edited")
        return self


class AgreementPair(BaseModel):
    annotators: list[int]
    emails: list[str]
    items: int
    kappa: float | None
    observed: float | None


class AgreementRead(BaseModel):
    items_with_overlap: int
    kappa: float | None
    pairs: list[AgreementPair]
    disputed: int
    judge_items: int = Field(0, description="resolved pairs an LLM judge pre-ranked")
    judge_agreement: float | None = Field(None, description=(
        "share of those where the judge picked the answer people preferred"))


class GenerationSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    provider_id: int
    params: dict[str, Any] = Field(default_factory=dict, description="temperature, seed, top_p, "
                                   "max_tokens: sent with every request of this source")


class GenerationCreate(BaseModel):
    """Draft candidate ``i`` of each item from ``sources[i]`` where it is missing (two providers,
    or one provider at two temperatures or seeds)."""

    model_config = ConfigDict(extra="forbid")
    sources: list[GenerationSource] = Field(min_length=2, max_length=4)
    item_ids: list[int] | None = Field(None, max_length=20_000,
                                       description="default: every item missing a candidate")


class PrerankCreate(BaseModel):
    """Have a judge provider pre-rank the pairs (both orders, so position bias cancels)."""

    model_config = ConfigDict(extra="forbid")
    judge_provider_id: int = Field(ge=1, le=2**63 - 1)
    item_ids: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] | None = Field(
        None, max_length=20_000, description="default: every item with two candidates")
    params: dict[str, Any] = Field(default_factory=dict, description="sent with every request")


class GenerationRead(JobLifecycleRead):
    default_queue: ClassVar[str] = "generate"
    status: JobStatus
    id: int
    project_id: int
    sources: list[dict[str, Any]]
    total_items: int
    done_items: int
    failed_items: int
    last_error: str | None
    created_at: datetime


class VersionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(min_length=1, max_length=200)] = "preferences"
    split: SplitRatios = Field(default_factory=SplitRatios)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    include_both_bad: bool = Field(True, description="keep items where both candidates were bad "
                                   "(KTO's undesirable examples; paired exports skip them)")


class VersionRead(JobLifecycleRead):
    queued_word: ClassVar[str] = "queued"
    status: BuildStatus
    id: int
    project_id: int
    number: int
    name: str
    filter: dict[str, Any]
    split: dict[str, float]
    seed: int
    counts: dict[str, int]
    stats: dict[str, Any]
    created_at: datetime
    built_at: datetime | None


class ExportRead(BaseModel):
    format: str
    files: dict[str, dict[str, Any]]
    manifest_sha256: str


# --- evaluation on a preference version (service/evaluation/preference.py) -------------------


class EvalModel(BaseModel):
    """A model under evaluation: ``base`` (``base_model``), ``training_job`` (a succeeded job's
    adapter on its start model) or ``provider`` (an endpoint; win rate only)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["base", "training_job", "provider"]
    base_model: str | None = Field(None, max_length=500)
    training_job_id: int | None = Field(None, ge=1, le=2**63 - 1)
    provider_id: int | None = Field(None, ge=1, le=2**63 - 1)


class EvalModels(BaseModel):
    model_config = ConfigDict(extra="forbid")
    policy: EvalModel | None = Field(None, description="reward_accuracy: the trained model")
    reference: EvalModel | None = Field(None, description=(
        "reward_accuracy: the reference (default: the policy job's start model)"))
    candidate: EvalModel | None = Field(None, description="win_rate: the model under test")
    baseline: EvalModel | None = Field(None, description="win_rate: what it is compared with")


class EvalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    beta: float | None = Field(None, gt=0, le=100, description=(
        "reward_accuracy: the DPO beta of the implicit reward (default: the policy job's)"))
    max_length: int = Field(1024, ge=16, le=32768, description="tokens of prompt + answer scored")
    batch_size: int = Field(8, ge=1, le=256)
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="win_rate: answering")
    max_tokens: int = Field(256, ge=1, le=32768, description="win_rate: answer length")
    seed: int | None = Field(None, ge=0, le=2**31 - 1)


class EvalCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    preference_version_id: int = Field(ge=1, le=2**63 - 1)
    kind: Literal["reward_accuracy", "win_rate"]
    split: Literal["train", "validation", "test"] = "test"
    name: str = Field("", max_length=200)
    models: EvalModels
    judge_provider_id: int | None = Field(None, ge=1, le=2**63 - 1,
                                          description="win_rate: the judge (an endpoint)")
    settings: EvalSettings = Field(default_factory=EvalSettings)


class EvalRead(JobLifecycleRead):
    default_queue: ClassVar[str] = "gpu"
    status: JobStatus
    id: int
    project_id: int
    preference_version_id: int
    split: str
    name: str
    kind: str
    models: dict[str, Any]
    training_job_id: int | None
    judge_provider_id: int | None
    settings: dict[str, Any]
    total: int
    done: int
    failed: int
    aggregate: dict[str, Any]
    created_at: datetime


class EvalItemRead(BaseModel):
    id: int
    item_id: int
    prompt: list[dict[str, Any]]
    chosen: str | None
    rejected: list[str]
    outputs: dict[str, Any]
    scores: dict[str, Any] | None
    error: str | None
