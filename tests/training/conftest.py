"""Training tests run offline: no hub downloads, ever."""

from __future__ import annotations

import os

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
