"""The shape of the code: no module under ``service/`` grows past ``MAX_LINES``.

A module that long holds more than one responsibility; split it by its seams and keep the old
module as the entry point that re-exports the names its callers use (as
``service/documents/parsing.py`` and ``service/generation/llm.py`` do).
"""

from __future__ import annotations

from pathlib import Path

import pytest

MAX_LINES = 600
SERVICE = Path(__file__).resolve().parent.parent / "service"


@pytest.mark.nodb
def test_no_service_module_is_over_the_line_limit():
    modules = sorted(SERVICE.rglob("*.py"))
    assert modules, f"no Python files under {SERVICE}"
    too_long = []
    for path in modules:
        with path.open(encoding="utf-8") as fh:
            lines = sum(1 for _ in fh)
        if lines > MAX_LINES:
            too_long.append(f"{path.relative_to(SERVICE.parent)}: {lines} lines")
    assert not too_long, f"modules over {MAX_LINES} lines (split them):\n" + "\n".join(too_long)
