"""``annotune create-user``: --password, the shared password policy, a clear error for an
existing email (no traceback)."""
from __future__ import annotations

from typer.testing import CliRunner

from service.cli import app


def test_create_user_with_password_policy_and_duplicate(db):
    runner = CliRunner()
    ok = runner.invoke(app, ["create-user", "cli@example.com", "--password", "a fine passphrase", "--admin"])
    assert ok.exit_code == 0, ok.output
    assert "created user" in ok.output and "(admin)" in ok.output
    again = runner.invoke(app, ["create-user", "CLI@example.com", "--password", "a fine passphrase"])
    assert again.exit_code == 1
    assert "already exists" in again.output and "Traceback" not in again.output
    weak = runner.invoke(app, ["create-user", "weak@example.com", "--password", "x"])
    assert weak.exit_code == 1 and "at least 10 characters" in weak.output
    prompted = runner.invoke(app, ["create-user", "asked@example.com"],
                             input="another passphrase\nanother passphrase\n")
    assert prompted.exit_code == 0, prompted.output
