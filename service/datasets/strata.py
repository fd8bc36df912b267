"""Versions by leaf of the domain tree (``service/diversity``): the version filter's
``domain_leaf_ids`` and ``stratify_by="domain_leaf"``, where each leaf's samples (and the
untagged ones, as one group) are split in the version's ratios, each in its sample-key order."""
from __future__ import annotations

from typing import Any

import numpy as np

from service.datasets.schemas import SPLITS, VersionFilter
from service.models import Sample


def where_leaves(stmt: Any, flt: VersionFilter) -> Any:
    if flt.domain_leaf_ids is None:
        return stmt
    return stmt.where(Sample.domain_leaf_id.in_(flt.domain_leaf_ids))


def group_column(stratify_by: str | None) -> Any:
    """What pass 1 reads beside the id: the leaf when stratifying by leaf, else the document."""
    return Sample.domain_leaf_id if stratify_by == "domain_leaf" else Sample.document_id


def by_leaf(ids: np.ndarray, leaves: np.ndarray, skey: np.ndarray, ratios: dict[str, float],
            target_counts: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(order, sorted split codes)``: leaf by leaf (ascending, -1 = untagged), each leaf's
    samples in key order, cut in ``target_counts`` of the leaf's size."""
    order = np.lexsort((ids, skey, leaves))
    _leaves, sizes = np.unique(leaves[order], return_counts=True)
    codes = [np.repeat(np.arange(len(SPLITS), dtype=np.int8), target_counts(int(k), ratios))
             for k in sizes]
    return order, np.concatenate(codes)
