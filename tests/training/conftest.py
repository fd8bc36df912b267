"""Training tests run offline: no hub downloads, ever."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    # These tests touch no database; `nodb` lets the shared conftest skip its per-test cleanup.
    config.addinivalue_line("markers", "nodb: the test uses no database")
