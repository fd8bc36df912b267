"""REST for coverage and diversity: the domain tree (read, edit, build, tag), coverage,
genre–audience pairs, distillation jobs."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from service.core.deps import ProjectLead, ProjectViewer, SessionDep
from service.core.pagination import CursorQ, LimitQ, Page, page
from service.diversity import dedup, schemas, tree
from service.diversity import service as diversity_service
from service.models import DiversityJob, GAPair

router = APIRouter(prefix="/api/v1/projects/{project_id}", tags=["diversity"])
NOT_FOUND = {404: {"description": "not found in this project"}}


def _tree(db: SessionDep, project_id: int) -> dict[str, Any]:
    roots = tree.load(db, project_id=project_id)
    counts = tree.leaf_counts(db, project_id=project_id)
    return {"roots": tree.as_dicts(roots, counts),
            "leaves": sum(1 for n, _ in tree.walk(roots) if n.is_leaf)}


@router.get("/domain-tree", response_model=schemas.TreeRead)
def get_tree(access: ProjectViewer, db: SessionDep):
    """The project's domain tree, each node with the samples that name it."""
    return _tree(db, access.project.id)


@router.put("/domain-tree", response_model=schemas.TreeRead)
def put_tree(body: schemas.TreeSpec, access: ProjectLead, db: SessionDep):
    """Write a whole tree (the old one goes; its samples keep no leaf)."""
    spec = tree.normalize_spec(body.roots, field_name="body.roots")
    tree.add_tree(db, project_id=access.project.id, spec=spec, replace=True)
    return _tree(db, access.project.id)


@router.post("/domain-nodes", response_model=schemas.NodeRead, status_code=status.HTTP_201_CREATED)
def create_node(body: schemas.NodeCreate, access: ProjectLead, db: SessionDep):
    return tree.create_node(db, project_id=access.project.id, name=body.name,
                            parent_id=body.parent_id)


@router.patch("/domain-nodes/{node_id}", response_model=schemas.NodeRead, responses=NOT_FOUND)
def update_node(node_id: int, body: schemas.NodeUpdate, access: ProjectLead, db: SessionDep):
    """Rename and/or move a node (``parent_id: null`` moves it to the top level)."""
    changes = body.model_dump(exclude_unset=True)
    kwargs: dict[str, Any] = {"name": changes.get("name"), "position": changes.get("position")}
    if "parent_id" in changes:
        kwargs["parent_id"] = changes["parent_id"]
    return tree.update_node(db, project_id=access.project.id, node_id=node_id, **kwargs)


@router.post("/domain-nodes/{node_id}/merge", response_model=schemas.NodeRead,
             responses=NOT_FOUND)
def merge_node(node_id: int, body: schemas.NodeMerge, access: ProjectLead, db: SessionDep):
    """Merge the node into another: its children and samples move there; it is deleted."""
    return tree.merge_nodes(db, project_id=access.project.id, node_id=node_id,
                            into_id=body.into_id)


@router.delete("/domain-nodes/{node_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses=NOT_FOUND)
def delete_node(node_id: int, access: ProjectLead, db: SessionDep):
    """Delete a node and its subtree; their samples keep no leaf."""
    tree.delete_node(db, project_id=access.project.id, node_id=node_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/coverage", response_model=schemas.CoverageRead)
def coverage(access: ProjectViewer, db: SessionDep):
    """Samples per leaf, the accepted share, the empty leaves, the untagged samples."""
    return tree.coverage(db, project_id=access.project.id)


def _start(db: SessionDep, access: Any, kind: str, body: schemas._JobBase):
    params = body.model_dump(exclude={"provider_id"})
    return diversity_service.create_job(db, project_id=access.project.id, kind=kind,
                                        provider_id=body.provider_id, params=params,
                                        actor_id=access.user.id)


@router.post("/domain-tree/build", response_model=schemas.JobRead,
             status_code=status.HTTP_202_ACCEPTED)
def build_tree(body: schemas.TreeJobCreate, access: ProjectLead, db: SessionDep):
    """A provider builds the tree from the documents' headings and a sample of chunks."""
    return _start(db, access, "tree", body)


@router.post("/domain-tree/tag", response_model=schemas.JobRead,
             status_code=status.HTTP_202_ACCEPTED)
def tag_samples(body: schemas.TagJobCreate, access: ProjectLead, db: SessionDep):
    """A judge names each selected sample's leaf (by default: the untagged ones)."""
    return _start(db, access, "tag", body)


@router.post("/ga-pairs/propose", response_model=schemas.JobRead,
             status_code=status.HTTP_202_ACCEPTED)
def propose_pairs(body: schemas.PairJobCreate, access: ProjectLead, db: SessionDep):
    """A provider proposes N (genre, audience) pairs per document."""
    return _start(db, access, "ga", body)


@router.post("/distillations", response_model=schemas.JobRead,
             status_code=status.HTTP_202_ACCEPTED)
def distil(body: schemas.DistillJobCreate, access: ProjectLead, db: SessionDep):
    """From a topic (or the domain tree's leaves): sub-topics, then questions per leaf, then
    answers; the samples go to review like any other and are marked ungrounded."""
    return _start(db, access, "distill", body)


@router.get("/diversity-jobs", response_model=Page[schemas.JobRead])
def list_jobs(access: ProjectViewer, db: SessionDep, limit: LimitQ = 50, cursor: CursorQ = None):
    """The project's diversity jobs, newest first."""
    return page(db, diversity_service.jobs_query(project_id=access.project.id),
                DiversityJob.id, limit=limit, cursor=cursor, descending=True)


@router.get("/diversity-jobs/{job_id}", response_model=schemas.JobRead, responses=NOT_FOUND)
def get_job(job_id: int, access: ProjectViewer, db: SessionDep):
    return diversity_service.get_job(db, project_id=access.project.id, job_id=job_id)


@router.post("/diversity-jobs/{job_id}/cancel", response_model=schemas.JobRead,
             responses=NOT_FOUND)
def cancel_job(job_id: int, access: ProjectLead, db: SessionDep):
    job = diversity_service.get_job(db, project_id=access.project.id, job_id=job_id)
    return diversity_service.cancel_job(db, job)


@router.post("/near-duplicates", response_model=schemas.NearDuplicateReport)
def near_duplicates(body: schemas.NearDuplicateCheck, access: ProjectLead, db: SessionDep):
    """Near-duplicate questions (MinHash, as the version leakage check) among a generation job's
    samples, e.g. across a genre–audience fan-out's variants (or the listed samples, or all the
    project's); the later of each pair is tagged."""
    return dedup.near_duplicates(db, project_id=access.project.id,
                                 generation_job_id=body.generation_job_id,
                                 sample_ids=body.sample_ids, threshold=body.threshold,
                                 tag=body.tag, actor_id=access.user.id)


@router.get("/ga-pairs", response_model=Page[schemas.PairRead])
def list_pairs(access: ProjectViewer, db: SessionDep, document_id: int | None = None,
               limit: LimitQ = 100, cursor: CursorQ = None):
    """Genre–audience pairs by document and position."""
    stmt = diversity_service.pairs_query(project_id=access.project.id, document_id=document_id)
    return page(db, stmt, GAPair.id, limit=limit, cursor=cursor,
                order=diversity_service.PAIR_ORDER)


@router.post("/ga-pairs", response_model=schemas.PairRead, status_code=status.HTTP_201_CREATED)
def create_pair(body: schemas.PairCreate, access: ProjectLead, db: SessionDep):
    return diversity_service.create_pair(db, project_id=access.project.id, **body.model_dump())


@router.patch("/ga-pairs/{pair_id}", response_model=schemas.PairRead, responses=NOT_FOUND)
def update_pair(pair_id: int, body: schemas.PairUpdate, access: ProjectLead, db: SessionDep):
    pair = diversity_service.get_pair(db, project_id=access.project.id, pair_id=pair_id)
    return diversity_service.update_pair(db, pair, genre=body.genre, audience=body.audience)


@router.delete("/ga-pairs/{pair_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses=NOT_FOUND)
def delete_pair(pair_id: int, access: ProjectLead, db: SessionDep):
    pair = diversity_service.get_pair(db, project_id=access.project.id, pair_id=pair_id)
    diversity_service.delete_pair(db, pair)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
