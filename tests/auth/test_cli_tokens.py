"""``annotune token list`` / ``token revoke`` and ``annotune --version``."""
from __future__ import annotations

import httpx
from typer.testing import CliRunner

from service.cli import app


def test_token_list_and_revoke(client, db, factories):
    actor = factories.make_actor(db, email="cli-tokens@example.com")
    runner = CliRunner()
    listed = runner.invoke(app, ["token", "list", actor.email])
    assert listed.exit_code == 0, listed.output
    row = listed.output.splitlines()[1].split("\t")
    token_id, prefix = row[0], row[1]
    assert actor.token.startswith(f"atk_{prefix}_") and "read,write" in row[3]
    assert row[-1] == "active" and actor.token not in listed.output  # never the secret
    assert client.get("/api/v1/me", headers=actor.headers).status_code == 200

    revoked = runner.invoke(app, ["token", "revoke", prefix])
    assert revoked.exit_code == 0 and f"token {token_id} ({prefix}) revoked" in revoked.output
    assert client.get("/api/v1/me", headers=actor.headers).status_code == 401
    again = runner.invoke(app, ["token", "revoke", token_id])
    assert again.exit_code == 0 and "already revoked" in again.output
    assert runner.invoke(app, ["token", "list", actor.email]).output.splitlines()[1].endswith(
        "revoked")
    missing = runner.invoke(app, ["token", "revoke", "999999"])
    assert missing.exit_code == 2 and "no token" in missing.output
    assert runner.invoke(app, ["token", "list", "nobody@example.com"]).exit_code == 2


def test_version():
    out = CliRunner().invoke(app, ["--version"])
    assert out.exit_code == 0 and out.output.startswith("annotune ")


class _Through(httpx.BaseTransport):
    """The service client's requests, answered by the app in this process (the TestClient)."""

    def __init__(self, test_client):
        self.test_client = test_client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        resp = self.test_client.request(request.method, request.url.raw_path.decode(),
                                        headers=dict(request.headers), content=request.read())
        return httpx.Response(resp.status_code, headers=dict(resp.headers), content=resp.content)


def test_token_list_and_revoke_through_the_api(client, db, factories, monkeypatch):
    """Without an email, ``token list`` shows your own tokens through the API (`annotune login`,
    --url/--token); ``token revoke --api`` revokes one of them there (the paged /tokens)."""
    from service import client as api_client

    actor = factories.make_actor(db, email="cli-api-tokens@example.com")
    spare = client.post("/api/v1/tokens", json={"name": "spare"}, headers=actor.headers).json()
    transport = _Through(client)

    def from_config(url=None, token=None, **kw):
        assert (url, token) == ("http://annotune.test", actor.token)
        return api_client.Client(url, token, transport=transport, **kw)

    monkeypatch.setattr(api_client.Client, "from_config", staticmethod(from_config))
    runner = CliRunner()
    where = ["--url", "http://annotune.test", "--token", actor.token]
    listed = runner.invoke(app, ["token", "list", *where])
    assert listed.exit_code == 0, listed.output
    rows = [line.split("\t") for line in listed.output.splitlines()[1:]]
    assert [r[2] for r in rows] == ["test", "spare"] and all(r[-1] == "active" for r in rows)
    assert actor.token not in listed.output and spare["token"] not in listed.output

    revoked = runner.invoke(app, ["token", "revoke", spare["prefix"], "--api", *where])
    assert revoked.exit_code == 0, revoked.output
    assert f"token {spare['id']} ({spare['prefix']}) revoked" in revoked.output
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {spare['token']}"}
                      ).status_code == 401
    again = runner.invoke(app, ["token", "revoke", str(spare["id"]), "--api", *where])
    assert again.exit_code == 0 and "already revoked" in again.output
    missing = runner.invoke(app, ["token", "revoke", "999999", "--api", *where])
    assert missing.exit_code == 2 and "no token" in missing.output
    assert runner.invoke(app, ["token", "list", *where]).output.splitlines()[2].endswith("revoked")
