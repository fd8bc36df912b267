"""The API process never imports torch (ML dependencies are an optional extra, loaded lazily)."""
from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.nodb
def test_app_and_every_route_module_import_without_torch():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'transformers', 'peft', 'bitsandbytes', 'accelerate'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from service.main import create_app\n"
        "app = create_app()\n"
        "from fastapi.testclient import TestClient\n"
        "c = TestClient(app)\n"
        "assert c.get('/healthz').status_code == 200\n"
        "assert c.get('/api/v1/openapi.json').status_code == 200\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'peft')]\n"
        "assert not heavy, heavy\n"
        "print(len(app.state.routers))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.strip()) >= 10
