"""LLaMA-Factory itself reads every export: its dataset_info.json parser, format aligners and SFT
tokenisation keep every record annotune wrote (nothing dropped, system prompts and multi-turn
history intact). Runs LLaMA-Factory's pipeline in a child process (tests/support/llamafactory_check.py);
skipped when llamafactory is not installed (scripts/bootstrap installs it without its
dependencies, for this test)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from service.datasets import export as datasets_export
from tests.datasets.test_export import TEXT_FORMATS, export, project, version  # noqa: F401

pytestmark = [
    pytest.mark.ml,
    pytest.mark.skipif(importlib.util.find_spec("llamafactory") is None,
                       reason="llamafactory is not installed"),
]
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("fmt", TEXT_FORMATS)
def test_llamafactory_keeps_every_record(db, version, fmt, tmp_path):  # noqa: F811
    from workers.training.models import make_tiny_model

    exp = export(db, version, fmt)
    folder = datasets_export.export_dir(version.id, fmt)
    tokenizer_dir = make_tiny_model(tmp_path / "tiny")
    proc = subprocess.run(
        [sys.executable, "-m", "tests.support.llamafactory_check", str(folder), str(tokenizer_dir),
         str(tmp_path / "out")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    members = exp.files["members"]
    expected = {f"contracts_fr_v{version.number}_{meta['split']}": meta["records"]
                for name, meta in members.items() if "split" in meta}
    assert set(result["datasets"]) == set(expected)
    for name, counts in result["datasets"].items():
        assert counts == {"aligned": expected[name], "valid": expected[name],
                          "tokenized": expected[name]}, (name, counts, proc.stderr[-2000:])
    first = result["first"]
    assert first["_response"][0]["role"] == "assistant" and first["_prompt"][-1]["role"] == "user"
    assert "Dropped invalid example" not in proc.stderr
