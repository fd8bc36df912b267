"""The project's domain tree: two or three levels of named nodes; a node without children is a
leaf and samples name their leaf (``Sample.domain_leaf_id``).

Edits keep the samples' leaves meaningful: a rename changes nothing else; a move keeps the
tree at most :data:`MAX_DEPTH` levels deep and never under itself; a merge moves the merged
node's children and samples into the target and deletes it; a delete removes the subtree and
clears the leaf of its samples. A node that gains children stops being a leaf: its samples
keep naming it (the coverage view lists them under the node) until re-tagged.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.orm import Session

from service.core.errors import Invalid
from service.core.lookup import get_in_project, in_project
from service.models import DomainNode, Sample

MAX_DEPTH = 3
MAX_NODES = 500
MAX_NAME = 200


@dataclass
class Node:
    id: int
    name: str
    parent_id: int | None
    position: int
    children: list[Node] = field(default_factory=list)

    @property
    def is_leaf(self) -> bool:
        return not self.children


def _invalid(field_name: str, message: str) -> Invalid:
    return Invalid(message, details=[{"field": field_name, "message": message}])


def clean_name(name: Any, field_name: str = "body.name") -> str:
    text = " ".join(str(name or "").split())
    if not text:
        raise _invalid(field_name, "a node needs a name")
    if len(text) > MAX_NAME:
        raise _invalid(field_name, f"at most {MAX_NAME} characters")
    return text


def load(db: Session, *, project_id: int) -> list[Node]:
    """The tree's roots, each with its children, in position order."""
    rows = db.execute(select(DomainNode.id, DomainNode.name, DomainNode.parent_id,
                             DomainNode.position)
                      .where(DomainNode.project_id == project_id)
                      .order_by(DomainNode.position, DomainNode.id)).all()
    nodes = {r.id: Node(r.id, r.name, r.parent_id, r.position) for r in rows}
    roots: list[Node] = []
    for node in nodes.values():
        parent = nodes.get(node.parent_id) if node.parent_id is not None else None
        (parent.children if parent is not None else roots).append(node)
    return roots


def walk(roots: list[Node], path: tuple[str, ...] = ()) -> list[tuple[Node, tuple[str, ...]]]:
    """Every node with its path of names, depth first."""
    out: list[tuple[Node, tuple[str, ...]]] = []
    for node in roots:
        here = (*path, node.name)
        out.append((node, here))
        out.extend(walk(node.children, here))
    return out


def leaves(db: Session, *, project_id: int) -> list[tuple[int, str]]:
    """``(leaf id, "A › B › C")`` for every leaf, in tree order."""
    return [(n.id, " › ".join(p)) for n, p in walk(load(db, project_id=project_id)) if n.is_leaf]


def get_node(db: Session, *, project_id: int, node_id: int) -> DomainNode:
    return get_in_project(db, DomainNode, node_id, project_id=project_id, what="domain node",
                          code="domain_node_not_found")


def check_leaf(db: Session, *, project_id: int, leaf_id: Any, field_name: str) -> int:
    """``leaf_id`` is a leaf of this project's tree (422 naming ``field_name`` otherwise)."""
    node = (in_project(db, DomainNode, leaf_id, project_id=project_id)
            if isinstance(leaf_id, int) else None)
    if node is None:
        raise _invalid(field_name, "no such node of this project's domain tree")
    if db.scalar(select(func.count()).select_from(DomainNode)
                 .where(DomainNode.parent_id == node.id)):
        raise _invalid(field_name, "a leaf of the domain tree (this node has children)")
    return node.id


def _depth(db: Session, node: DomainNode | None) -> int:
    """Levels from the root down to ``node`` (a root is level 1; None is level 0)."""
    depth = 0
    while node is not None:
        depth += 1
        node = db.get(DomainNode, node.parent_id) if node.parent_id is not None else None
    return depth


def _height(db: Session, node_id: int) -> int:
    """Levels of the subtree under and including ``node_id``."""
    kids = list(db.scalars(select(DomainNode.id).where(DomainNode.parent_id == node_id)))
    return 1 + max((_height(db, k) for k in kids), default=0)


def _subtree_ids(db: Session, node_id: int) -> list[int]:
    out, frontier = [node_id], [node_id]
    while frontier:
        frontier = list(db.scalars(select(DomainNode.id).where(DomainNode.parent_id.in_(frontier))))
        out.extend(frontier)
    return out


def _count(db: Session, project_id: int) -> int:
    return db.scalar(select(func.count()).select_from(DomainNode)
                     .where(DomainNode.project_id == project_id)) or 0


def create_node(db: Session, *, project_id: int, name: str, parent_id: int | None = None
                ) -> DomainNode:
    parent = None
    if parent_id is not None:
        parent = get_node(db, project_id=project_id, node_id=parent_id)
        if _depth(db, parent) >= MAX_DEPTH:
            raise _invalid("body.parent_id", f"the tree is at most {MAX_DEPTH} levels deep")
    if _count(db, project_id) >= MAX_NODES:
        raise _invalid("body.name", f"a tree has at most {MAX_NODES} nodes")
    position = db.scalar(select(func.coalesce(func.max(DomainNode.position), -1) + 1).where(
        DomainNode.project_id == project_id,
        DomainNode.parent_id.is_(None) if parent is None else DomainNode.parent_id == parent.id))
    node = DomainNode(project_id=project_id, parent_id=parent.id if parent else None,
                      name=clean_name(name), position=int(position or 0))
    db.add(node)
    db.flush()
    return node


_ROOT = object()


def update_node(db: Session, *, project_id: int, node_id: int, name: str | None = None,
                parent_id: Any = _ROOT, position: int | None = None) -> DomainNode:
    """Rename and/or move (``parent_id=None``: to the top level; omitted: stays)."""
    node = get_node(db, project_id=project_id, node_id=node_id)
    if name is not None:
        node.name = clean_name(name)
    if parent_id is not _ROOT and parent_id != node.parent_id:
        parent = None
        if parent_id is not None:
            parent = get_node(db, project_id=project_id, node_id=parent_id)
            if parent.id in _subtree_ids(db, node.id):
                raise _invalid("body.parent_id", "a node cannot move under itself")
        if _depth(db, parent) + _height(db, node.id) > MAX_DEPTH:
            raise _invalid("body.parent_id", f"the tree is at most {MAX_DEPTH} levels deep")
        node.parent_id = parent.id if parent else None
    if position is not None:
        node.position = position
    db.flush()
    return node


def merge_nodes(db: Session, *, project_id: int, node_id: int, into_id: int) -> DomainNode:
    """``node_id`` goes into ``into_id``: its children and its samples move there, it is deleted."""
    node = get_node(db, project_id=project_id, node_id=node_id)
    into = get_node(db, project_id=project_id, node_id=into_id)
    if into.id in _subtree_ids(db, node.id):
        raise _invalid("body.into_id", "a node cannot merge into itself or its own subtree")
    kids = list(db.scalars(select(DomainNode).where(DomainNode.parent_id == node.id)))
    if kids and _depth(db, into) + max(_height(db, k.id) for k in kids) > MAX_DEPTH:
        raise _invalid("body.into_id", f"the tree is at most {MAX_DEPTH} levels deep")
    for kid in kids:
        kid.parent_id = into.id
    db.flush()
    db.execute(update(Sample).where(Sample.project_id == project_id,
                                    Sample.domain_leaf_id == node.id)
               .values(domain_leaf_id=into.id).execution_options(synchronize_session=False))
    db.delete(node)
    db.flush()
    return into


def delete_node(db: Session, *, project_id: int, node_id: int) -> int:
    """Delete the node and its subtree; their samples keep no leaf. Returns the nodes deleted."""
    get_node(db, project_id=project_id, node_id=node_id)
    ids = _subtree_ids(db, node_id)
    _clear(db, project_id, ids)
    db.execute(delete(DomainNode).where(DomainNode.id.in_(ids))
               .execution_options(synchronize_session=False))
    db.flush()
    return len(ids)


def _clear(db: Session, project_id: int, node_ids: list[int] | None) -> None:
    stmt = update(Sample).where(Sample.project_id == project_id,
                                Sample.domain_leaf_id.is_not(None))
    if node_ids is not None:
        stmt = stmt.where(Sample.domain_leaf_id.in_(node_ids))
    db.execute(stmt.values(domain_leaf_id=None).execution_options(synchronize_session=False))


def normalize_spec(value: Any, *, depth: int = 1, max_depth: int = MAX_DEPTH,
                   field_name: str = "tree") -> list[dict[str, Any]]:
    """A nested ``[{"name", "children": [...]}]`` (or plain strings for leaves) checked and
    cleaned: names folded and non-empty, at most ``max_depth`` levels (deeper levels are cut),
    duplicate siblings dropped."""
    if not isinstance(value, list):
        raise _invalid(field_name, "a list of nodes")
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        raw_name = item if isinstance(item, str) else (
            item.get("name") if isinstance(item, dict) else None)
        if raw_name is None:
            raise _invalid(f"{field_name}.{i}", "each node is a name or {name, children}")
        name = clean_name(raw_name, f"{field_name}.{i}.name")
        if name.casefold() in seen:
            continue
        seen.add(name.casefold())
        kids = item.get("children") if isinstance(item, dict) else None
        children = (normalize_spec(kids, depth=depth + 1, max_depth=max_depth,
                                   field_name=f"{field_name}.{i}.children")
                    if kids and depth < max_depth else [])
        out.append({"name": name, "children": children})
    return out


def _spec_size(spec: list[dict[str, Any]]) -> int:
    return sum(1 + _spec_size(n["children"]) for n in spec)


def add_tree(db: Session, *, project_id: int, spec: list[dict[str, Any]], replace: bool = False
             ) -> list[tuple[int, str]]:
    """Write ``spec`` (see :func:`normalize_spec`) as new top-level nodes, or as the whole tree
    (``replace``: the old one is deleted and its samples keep no leaf). Returns ``(id, path)``
    of the new leaves."""
    if _spec_size(spec) + (0 if replace else _count(db, project_id)) > MAX_NODES:
        raise _invalid("tree", f"a tree has at most {MAX_NODES} nodes")
    if replace:
        _clear(db, project_id, None)
        db.execute(delete(DomainNode).where(DomainNode.project_id == project_id)
                   .execution_options(synchronize_session=False))
    start = 0 if replace else int(db.scalar(select(func.coalesce(func.max(DomainNode.position), -1) + 1)
                                            .where(DomainNode.project_id == project_id,
                                                   DomainNode.parent_id.is_(None))) or 0)
    new_leaves: list[tuple[int, str]] = []

    def add(items: list[dict[str, Any]], parent: int | None, path: tuple[str, ...],
            first: int) -> None:
        for pos, item in enumerate(items, first):
            node = DomainNode(project_id=project_id, parent_id=parent, name=item["name"],
                              position=pos)
            db.add(node)
            db.flush()
            here = (*path, item["name"])
            if item["children"]:
                add(item["children"], node.id, here, 0)
            else:
                new_leaves.append((node.id, " › ".join(here)))

    add(spec, None, (), start)
    db.flush()
    return new_leaves


def as_dicts(roots: list[Node], counts: dict[int, dict[str, int]] | None = None
             ) -> list[dict[str, Any]]:
    counts = counts or {}
    return [{"id": n.id, "name": n.name, "parent_id": n.parent_id, "position": n.position,
             "leaf": n.is_leaf, "samples": counts.get(n.id, {}).get("total", 0),
             "children": as_dicts(n.children, counts)} for n in roots]


def leaf_counts(db: Session, *, project_id: int) -> dict[int | None, dict[str, int]]:
    """Samples and accepted samples per ``domain_leaf_id`` (None: untagged)."""
    rows = db.execute(select(Sample.domain_leaf_id, func.count(),
                             func.sum(case((Sample.status == "accepted", 1), else_=0)))
                      .where(Sample.project_id == project_id)
                      .group_by(Sample.domain_leaf_id)).all()
    return {leaf: {"total": int(n), "accepted": int(acc or 0)} for leaf, n, acc in rows}


def coverage(db: Session, *, project_id: int) -> dict[str, Any]:
    """Samples per leaf, the accepted share, the empty leaves, and the samples with no leaf."""
    roots = load(db, project_id=project_id)
    counts = leaf_counts(db, project_id=project_id)
    rows: list[dict[str, Any]] = []
    for node, path in walk(roots):
        c = counts.get(node.id, {"total": 0, "accepted": 0})
        if not node.is_leaf and not c["total"]:
            continue  # inner nodes appear only when samples still name them
        rows.append({"id": node.id, "path": " › ".join(path), "leaf": node.is_leaf,
                     "samples": c["total"], "accepted": c["accepted"],
                     "accepted_share": round(c["accepted"] / c["total"], 4) if c["total"] else None})
    untagged = counts.get(None, {"total": 0, "accepted": 0})
    known = {n.id for n, _ in walk(roots)}
    orphaned = sum(c["total"] for leaf, c in counts.items() if leaf is not None and leaf not in known)
    total = sum(c["total"] for c in counts.values())
    by_depth: dict[int, int] = defaultdict(int)
    for _node, path in walk(roots):
        by_depth[len(path)] += 1
    return {"leaves": rows, "empty_leaves": [r for r in rows if r["leaf"] and not r["samples"]],
            "untagged": untagged["total"] + orphaned, "untagged_accepted": untagged["accepted"],
            "samples": total, "tagged": total - untagged["total"] - orphaned,
            "levels": dict(sorted(by_depth.items())),
            "max_samples": max((r["samples"] for r in rows), default=0)}
