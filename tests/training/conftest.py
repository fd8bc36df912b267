"""Training tests run offline: no hub downloads, ever."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    # These tests touch no database; `nodb` lets the shared conftest skip its per-test cleanup.
    config.addinivalue_line("markers", "nodb: the test uses no database")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny random Llama with the offline tokenizer (one per test module)."""
    from workers.training.models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


WORDS = ["annotators", "review", "every", "sample", "before", "a", "dataset", "version", "is", "frozen"]  # fmt: skip


@pytest.fixture(scope="module")
def spread_file(tmp_path_factory) -> Path:
    """Conversations from 1 to 40 answer words, some with two assistant turns."""
    path = tmp_path_factory.mktemp("pack-data") / "train.jsonl"
    rows = []
    for i in range(24):
        n = 1 + (i * 17) % 40
        messages = [
            {"role": "user", "content": f"Question {i}?"},
            {
                "role": "assistant",
                "content": " ".join(WORDS[(i + k) % len(WORDS)] for k in range(n)),
            },
        ]
        if i % 3 == 0:
            messages += [
                {"role": "user", "content": "And then?"},
                {"role": "assistant", "content": "Done."},
            ]
        rows.append({"messages": messages})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path
