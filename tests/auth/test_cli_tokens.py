"""``annotune token list`` / ``token revoke`` and ``annotune --version``."""
from __future__ import annotations

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
