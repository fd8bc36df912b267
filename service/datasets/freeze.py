"""What a version build freezes: each sample's messages as the validation gate accepts them, or
the reason an export format or its consumers would drop or reject it (``Unexportable``)."""
from __future__ import annotations

from typing import Any

from service.samples import validation

__all__ = ["REFUSED_LISTED", "Unexportable", "frozen_messages"]

REFUSED_LISTED = 1000  # refused samples recorded on a failed version (the count is exact)


class Unexportable(Exception):
    """Samples the build will not freeze: ``refused`` = [{sample_id, code, field, message}]."""

    def __init__(self, refused: list[dict[str, Any]], total: int) -> None:
        shown = ", ".join(f"{r['sample_id']} ({r['code']} at {r['field']})" for r in refused[:20])
        more = f" and {total - 20} more" if total > 20 else ""
        super().__init__(f"{total} sample(s) would be dropped or rejected by an export format "
                         f"or its consumers; fix them or leave them out of the version: "
                         f"{shown}{more}")
        self.refused = refused
        self.total = total


def frozen_messages(messages: Any) -> tuple[list[dict[str, str]] | None, validation.Issue | None]:
    """The canonical copy a version freezes (``role`` and ``content`` only, in that order;
    exports copy its JSON text as is), or the gate's first reason to refuse it."""
    issues = validation.gate_issues(messages)
    if issues:
        return None, issues[0]
    return [{"role": m["role"], "content": m["content"]} for m in messages], None
