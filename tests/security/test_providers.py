"""Item 1 and 2: a provider's key is bound to its URL, and provider URLs obey the egress policy."""
from __future__ import annotations

import pytest

from service.core import egress
from service.core.config import get_settings
from tests.security.recording_server import RecordingServer

SECRET = "sk-live-0123456789-secret"


@pytest.fixture
def allow(monkeypatch):
    def set_allow(*entries: str) -> None:
        monkeypatch.setattr(get_settings(), "egress_allow", list(entries))
    set_allow()  # nothing internal allowed unless a test says so
    return set_allow


def _project(db, factories):
    owner = factories.make_actor(db)
    lead = factories.make_actor(db)
    from service.models import User

    project = factories.make_project(db, db.get(User, owner.user_id))
    factories.add_member(db, project, db.get(User, lead.user_id), "lead")
    return project.id, owner, lead


def test_repointed_provider_test_call_carries_no_key(client, db, factories, allow):
    pid, owner, lead = _project(db, factories)
    with RecordingServer() as first, RecordingServer() as attacker:
        allow(f"127.0.0.1:{first.port}", f"127.0.0.1:{attacker.port}")
        resp = client.post(f"/api/v1/projects/{pid}/providers", headers=owner.headers, json={
            "name": "p", "base_url": f"{first.url}/v1", "model": "m", "api_key": SECRET})
        assert resp.status_code == 201 and resp.json()["has_api_key"] is True
        prov = resp.json()["id"]
        ok = client.post(f"/api/v1/projects/{pid}/providers/{prov}/test", headers=owner.headers)
        assert ok.status_code == 200 and ok.json()["ok"] is True
        assert first.authorizations() == [f"Bearer {SECRET}"]

        # a lead may not touch a keyed provider at all
        stolen = client.patch(f"/api/v1/projects/{pid}/providers/{prov}", headers=lead.headers,
                              json={"base_url": f"{attacker.url}/v1"})
        assert stolen.status_code == 403 and stolen.json()["error"]["code"] == "keyed_provider"
        assert client.delete(f"/api/v1/projects/{pid}/providers/{prov}",
                             headers=lead.headers).status_code == 403

        # an owner repointing it without re-supplying the key drops the key
        moved = client.patch(f"/api/v1/projects/{pid}/providers/{prov}", headers=owner.headers,
                             json={"base_url": f"{attacker.url}/v1"})
        assert moved.status_code == 200 and moved.json()["has_api_key"] is False
        tested = client.post(f"/api/v1/projects/{pid}/providers/{prov}/test", headers=lead.headers)
        assert tested.status_code == 200 and tested.json()["ok"] is True
        assert attacker.requests, "the test call reached the new URL"
        assert all(SECRET not in str(r["headers"]) for r in attacker.requests)
        assert attacker.authorizations() == ["Bearer EMPTY"]

        # the key comes back only when the request supplies it with the new URL
        again = client.patch(f"/api/v1/projects/{pid}/providers/{prov}", headers=owner.headers,
                             json={"base_url": f"{first.url}/v1", "api_key": SECRET})
        assert again.json()["has_api_key"] is True
        # other changes keep the key
        renamed = client.patch(f"/api/v1/projects/{pid}/providers/{prov}", headers=owner.headers,
                               json={"name": "renamed"})
        assert renamed.json()["has_api_key"] is True
    # an unkeyed provider is still the lead's to manage
    free = client.post(f"/api/v1/projects/{pid}/providers", headers=lead.headers, json={
        "name": "free", "base_url": "https://api.example.com/v1", "model": "m"}).json()
    assert client.patch(f"/api/v1/projects/{pid}/providers/{free['id']}", headers=lead.headers,
                        json={"name": "still mine"}).status_code == 200
    events = [e["event"] for e in client.get(
        "/api/v1/audit-events?event=provider.", headers=factories.make_actor(db, is_admin=True).headers
    ).json()["items"]]
    assert events.count("provider.update") == 4 and events.count("provider.create") == 2


INTERNAL = [
    "http://127.0.0.1:5432/v1",
    "http://127.0.0.1:6379/",
    "http://[::1]:8000/v1",
    "http://0x7f000001:8000/v1",
    "http://2130706433/v1",
    "http://0177.0.0.1/v1",
    "http://[::ffff:127.0.0.1]/v1",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.5:8000/v1",
    "http://192.168.1.10/v1",
    "http://172.16.0.1/v1",
    "http://100.64.0.1/v1",
    "http://0.0.0.0:8000/v1",
    "http://localhost:8000/v1",
]


@pytest.mark.parametrize("url", INTERNAL)
def test_internal_addresses_refused(url):
    with pytest.raises(egress.EgressDenied) as info:
        egress.check_url(url, allow=[])
    assert egress.SETTING in info.value.message


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://127.0.0.1:6379/_INFO",
                                 "ftp://example.com/", "dict://127.0.0.1:11211/", "//x/v1"])
def test_only_http_and_https(url):
    with pytest.raises(egress.EgressDenied):
        egress.check_url(url, allow=["127.0.0.1"])


def test_allow_list_forms():
    egress.check_url("http://127.0.0.1:8000/v1", allow=["127.0.0.1:8000"])
    egress.check_url("http://10.1.2.3:9000/v1", allow=["10.0.0.0/8"])
    egress.check_url("http://[::1]:8000/v1", allow=["::1"])
    egress.check_url("http://localhost:11434/v1", allow=["localhost:11434"])
    egress.check_url("https://93.184.215.14/v1", allow=[])  # a public address needs no entry
    with pytest.raises(egress.EgressDenied):
        egress.check_url("http://127.0.0.1:8001/v1", allow=["127.0.0.1:8000"])  # other port
    with pytest.raises(egress.EgressDenied):
        egress.check_url("http://localhost:8000/v1", allow=["10.0.0.0/8"])


@pytest.mark.parametrize("url", ["http://127.0.0.1:5432/v1", "http://[::1]:6379/", "http://0x7f000001/",
                                 "http://169.254.169.254/latest/", "http://10.0.0.1/v1",
                                 "file:///etc/passwd", "gopher://127.0.0.1:6379/_INFO"])
def test_api_refuses_internal_provider_urls(client, db, factories, allow, url):
    pid, owner, _lead = _project(db, factories)
    resp = client.post(f"/api/v1/projects/{pid}/providers", headers=owner.headers,
                       json={"name": "p", "base_url": url, "model": "m"})
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["code"] == "egress_denied"
    ok = client.post(f"/api/v1/projects/{pid}/providers", headers=owner.headers,
                     json={"name": "p", "base_url": "https://api.example.com/v1", "model": "m"}).json()
    moved = client.patch(f"/api/v1/projects/{pid}/providers/{ok['id']}", headers=owner.headers,
                         json={"base_url": url})
    assert moved.status_code == 422 and moved.json()["error"]["code"] == "egress_denied"


def test_connections_checked_at_connect_time_and_on_redirects(allow):
    """A stored URL that became internal (DNS, allow-list shrunk) or redirects inward is refused
    by the HTTP client itself, and the remote's error body is not echoed."""
    from service.generation import llm

    with RecordingServer() as inner, RecordingServer(redirect_to=None) as outer:
        allow(f"127.0.0.1:{outer.port}")
        bounced = RecordingServer(redirect_to=f"http://localhost:{inner.port}")
        with bounced:
            allow(f"127.0.0.1:{bounced.port}")
            report = llm.test_connection(llm.ProviderSettings(
                base_url=f"{bounced.url}/v1", model="m", api_key=SECRET, max_retries=0))
            assert report["ok"] is False and egress.SETTING in (report["error"] or "")
            assert bounced.requests and not inner.requests
        allow()
        report = llm.test_connection(llm.ProviderSettings(base_url=f"{inner.url}/v1", model="m"))
        assert report["ok"] is False and egress.SETTING in report["error"]
        assert not inner.requests
    with RecordingServer(status=500, body=b"-ERR redis banner: requirepass s3cr3t") as noisy:
        allow(f"127.0.0.1:{noisy.port}")
        report = llm.test_connection(llm.ProviderSettings(base_url=f"{noisy.url}/v1", model="m",
                                                          max_retries=0))
        assert report["ok"] is False and report["status_code"] == 500
        assert "s3cr3t" not in str(report) and "banner" not in str(report)
    llm.close_clients()
