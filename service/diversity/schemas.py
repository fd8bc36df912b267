"""Request and response shapes of the diversity domain."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.core.jobs import JobLifecycleRead
from service.models import JobStatus

Lang = Literal["en", "zh"]
Name = Field(min_length=1, max_length=200, pattern=r"\S")  # not only whitespace


class NodeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Name
    parent_id: int | None = Field(None, description="the parent node (none: a top-level domain)")


class NodeUpdate(BaseModel):
    """Rename and/or move; send ``parent_id: null`` to move a node to the top level."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=200, pattern=r"\S")
    parent_id: int | None = None
    position: int | None = Field(None, ge=0, le=10_000)


class NodeMerge(BaseModel):
    model_config = ConfigDict(extra="forbid")
    into_id: int = Field(description="the node that takes this node's children and samples")


class NodeRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    parent_id: int | None
    position: int


class TreeNode(BaseModel):
    id: int
    name: str
    parent_id: int | None
    position: int
    leaf: bool
    samples: int = Field(description="samples that name this node as their leaf")
    children: list[TreeNode]


class TreeRead(BaseModel):
    roots: list[TreeNode]
    leaves: int


class TreeSpec(BaseModel):
    """A whole tree written at once: ``[{"name", "children": [...]}]`` (names of leaves may be
    plain strings); the old tree is deleted and its samples keep no leaf."""

    model_config = ConfigDict(extra="forbid")
    roots: list[Any] = Field(max_length=200)


class CoverageLeaf(BaseModel):
    id: int
    path: str
    leaf: bool
    samples: int
    accepted: int
    accepted_share: float | None


class CoverageRead(BaseModel):
    leaves: list[CoverageLeaf]
    empty_leaves: list[CoverageLeaf]
    untagged: int = Field(description="samples with no leaf (or a leaf that was deleted)")
    untagged_accepted: int
    samples: int
    tagged: int
    levels: dict[int, int] = Field(description="nodes per level")
    max_samples: int


class Templates(BaseModel):
    """Templates by step kind (``domain_tree``, ``domain_tag``, ``ga_pairs``, ``topic_expand``,
    ``topic_questions``, ``topic_answer``); a step not named uses the project's template named
    ``<kind>.<lang>`` if there is one, else the built-in."""

    model_config = ConfigDict(extra="forbid")
    domain_tree: int | None = None
    domain_tag: int | None = None
    ga_pairs: int | None = None
    topic_expand: int | None = None
    topic_questions: int | None = None
    topic_answer: int | None = None


class _JobBase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    provider_id: int
    lang: Lang = "en"
    templates: Templates = Field(default_factory=Templates)
    sampling: dict[str, Any] = Field(default_factory=dict, description="temperature, max_tokens, ...")


class TreeJobCreate(_JobBase):
    levels: int = Field(2, ge=2, le=3)
    max_chunks: int = Field(12, ge=1, le=100, description="chunks sampled for the prompt")
    replace: bool = Field(False, description="replace an existing tree (its samples keep no leaf)")


class TagJobCreate(_JobBase):
    sample_ids: list[int] | None = Field(None, max_length=100_000)
    statuses: list[Literal["pending", "accepted", "rejected", "needs_changes"]] | None = None
    only_untagged: bool = True


class PairJobCreate(_JobBase):
    document_ids: list[int] | None = Field(None, max_length=10_000)
    n: int = Field(4, ge=1, le=20)
    replace: bool = Field(False, description="replace each document's pairs")


class DistillJobCreate(_JobBase):
    topic: str | None = Field(None, max_length=200)
    use_tree: bool = Field(False, description="the domain tree's leaves instead of a topic")
    depth: int = Field(2, ge=1, le=2, description="levels of sub-topics under the topic")
    breadth: int = Field(3, ge=1, le=10, description="sub-topics per topic")
    questions_per_leaf: int = Field(3, ge=1, le=20)


class JobRead(JobLifecycleRead):
    default_queue = "generate"
    status: JobStatus
    id: int
    project_id: int
    kind: str
    provider_id: int
    params: dict[str, Any]
    result: dict[str, Any]
    created_at: datetime


class NearDuplicateCheck(BaseModel):
    """Which samples to compare: a generation job's (a genre–audience fan-out), a list, or
    (neither given) all the project's samples, up to 200,000."""

    model_config = ConfigDict(extra="forbid")
    generation_job_id: int | None = None
    sample_ids: list[int] | None = Field(None, max_length=200_000)
    threshold: float = Field(0.8, ge=0.5, le=1.0, description="estimated Jaccard similarity")
    tag: str | None = Field("near-duplicate", min_length=1, max_length=200,
                            description="tag added to the later sample of each pair (null: "
                                        "only report)")


class NearDuplicatePair(BaseModel):
    sample_id: int
    duplicate_of: int
    similarity: float


class NearDuplicateReport(BaseModel):
    checked: int
    tagged: int
    tag: str | None
    pairs: list[NearDuplicatePair]


class PairCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    document_id: int
    genre: str = Name
    audience: str = Name


class PairUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    genre: str | None = Field(None, min_length=1, max_length=200, pattern=r"\S")
    audience: str | None = Field(None, min_length=1, max_length=200, pattern=r"\S")


class PairRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    document_id: int
    genre: str
    audience: str
    position: int
