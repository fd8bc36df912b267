"""docker-compose.yml has the production shape (no Docker engine runs here, so it is parsed)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.nodb
def test_compose_services_and_gpu_worker():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "api", "worker", "gpu-worker", "flower"}
    gpu = services["gpu-worker"]
    assert "gpu" in gpu["command"] and "--concurrency" in gpu["command"]
    assert gpu["command"][gpu["command"].index("--concurrency") + 1] == "1"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert devices["driver"] == "nvidia" and "gpu" in devices["capabilities"]
    assert "ingest,generate" in services["worker"]["command"]
    for name in ("api", "worker", "gpu-worker", "flower"):
        env = services[name]["environment"]
        assert env["ANNOTUNE_BROKER_URL"].startswith("redis://")
        assert env["ANNOTUNE_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert "ANNOTUNE_SECRET_KEY" in env
