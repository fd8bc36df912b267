"""`annotune up`: the embedded default on a fresh data dir, driven as a new user would."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def embedded(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANNOTUNE_")}
    env.update({"ANNOTUNE_DATA_DIR": str(tmp_path / "data"), "ANNOTUNE_PORT": str(port),
                "ANNOTUNE_FIRST_ADMIN_EMAIL": "admin@example.com",
                "ANNOTUNE_FIRST_ADMIN_PASSWORD": "admin-password-1"})
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115 - closed in the fixture's finally
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "up"], cwd=tmp_path, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (tmp_path / "up.log").read_text()
            time.sleep(0.3)
        else:
            pytest.fail((tmp_path / "up.log").read_text())
        yield base, proc, tmp_path
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


@pytest.mark.nodb
def test_up_serves_logs_in_creates_project_adds_annotator_and_runs_tasks(embedded):
    base, proc, tmp_path = embedded
    with httpx.Client(base_url=base, follow_redirects=False) as http:
        page = http.get("/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        resp = http.post("/login", data={"email": "admin@example.com", "password": "admin-password-1",
                                         "csrf_token": csrf})
        assert resp.status_code == 303
        projects = http.get("/projects")
        token = re.search(r'<meta name="csrf-token" content="([^"]+)"', projects.text).group(1)
        created = http.post("/api/v1/users", headers={"X-CSRF-Token": token},
                            json={"email": "ann@example.com", "password": "annotator-pw"})
        assert created.status_code == 201, created.text
        resp = http.post("/projects", data={"name": "Embedded", "csrf_token": token})
        assert resp.status_code == 303
        pid = resp.headers["location"].rsplit("/", 1)[1]
        added = http.post(f"/projects/{pid}/members",
                          data={"email": "ann@example.com", "role": "annotator", "csrf_token": token})
        assert added.status_code == 200 and "ann@example.com" in added.text

    # a task sent through the embedded (server-less) broker is run by the worker beside the API
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANNOTUNE_")}
    env["ANNOTUNE_DATA_DIR"] = str(tmp_path / "data")
    subprocess.run([sys.executable, "-c", ("from service.core.jobs import send_now; "
                                           "send_now('system.ping', payload='embedded-check')")],
                   cwd=ROOT, env=env, check=True)
    deadline = time.time() + 120  # generous: CI machines are busy
    while time.time() < deadline and not re.search(r"Task system\.ping\[[^\]]+\] succeeded",
                                                   (tmp_path / "up.log").read_text()):
        time.sleep(0.3)
    log_text = (tmp_path / "up.log").read_text()
    assert re.search(r"Task system\.ping\[[^\]]+\] succeeded", log_text), log_text[-3000:]

    worker_pid = int((tmp_path / "data" / "worker.pid").read_text())
    os.kill(worker_pid, 0)  # the worker beside the API is alive
    proc.send_signal(signal.SIGTERM)  # like `docker stop` / systemd; Ctrl-C (SIGINT) works too
    assert proc.wait(timeout=40) is not None
    deadline = time.time() + 20
    while time.time() < deadline and _alive(worker_pid):
        time.sleep(0.2)
    assert not _alive(worker_pid), "the worker outlived `annotune up`"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by anyone) counts as stopped
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.nodb
@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not installed")
def test_first_admin_in_a_real_browser(embedded):
    from playwright.sync_api import sync_playwright

    base, _proc, _ = embedded
    with httpx.Client(base_url=base) as http:  # an annotator account to add
        page = http.get("/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        http.post("/login", data={"email": "admin@example.com", "password": "admin-password-1",
                                  "csrf_token": csrf})
        token = re.search(r'<meta name="csrf-token" content="([^"]+)"', http.get("/projects").text).group(1)
        http.post("/api/v1/users", headers={"X-CSRF-Token": token},
                  json={"email": "annotator@example.com", "password": "annotator-pw"})
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"])
        page = browser.new_page()
        page.goto(f"{base}/projects")
        assert "/login" in page.url
        page.fill("input[name=email]", "admin@example.com")
        page.fill("input[name=password]", "admin-password-1")
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/projects")
        page.fill("input[name=name]", "<b>Keywords</b> 关键词")
        page.click("text=Create project")
        page.wait_for_url(re.compile(r".*/projects/\d+$"))
        assert page.locator("h1").inner_text() == "<b>Keywords</b> 关键词"
        page.click("text=Members")
        page.fill("section.card input[name=email]", "annotator@example.com")
        page.click("section.card button[type=submit]")
        row = page.locator('tr[data-email="annotator@example.com"]')
        row.wait_for()
        assert row.locator("select").input_value() == "annotator"
        browser.close()
