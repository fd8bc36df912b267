"""Item 9: security headers and a CSP the pages keep (no inline script, style or handlers)."""
from __future__ import annotations

import re
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "pages"


def test_security_headers_on_pages_and_api(client, db, factories):
    user = factories.make_user(db)
    factories.browser_login(client, user.email)
    for path in ("/login", "/projects", "/api/v1/me", "/static/pages.js"):
        resp = client.get(path)
        csp = resp.headers["content-security-policy"]
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        assert "object-src 'none'" in csp
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["referrer-policy"] in ("same-origin", "no-referrer",
                                                   "strict-origin-when-cross-origin")


def test_templates_have_no_inline_script_style_or_handlers():
    problems = []
    for path in sorted(TEMPLATES.glob("*.html")):
        text = path.read_text()
        for match in re.finditer(r"<script\b([^>]*)>", text):
            attrs = match.group(1)
            if "src=" not in attrs and 'type="application/json"' not in attrs:
                problems.append(f"{path.name}: inline <script>")
        if re.search(r"<style\b", text):
            problems.append(f"{path.name}: <style> element")
        if re.search(r"\sstyle\s*=", text):
            problems.append(f"{path.name}: style attribute")
        if re.search(r"\son[a-z]+\s*=", text):
            problems.append(f"{path.name}: inline event handler")
        if "javascript:" in text:
            problems.append(f"{path.name}: javascript: URL")
    assert not problems, "\n".join(problems)


def test_audit_log_is_for_admins(client, db, factories):
    admin = factories.make_actor(db, is_admin=True)
    plain = factories.make_actor(db)
    client.post("/api/v1/tokens", json={"name": "ci"}, headers=plain.headers)
    assert client.get("/api/v1/audit-events", headers=plain.headers).status_code == 403
    page = client.get(f"/api/v1/audit-events?event=token.&actor_id={plain.user_id}",
                      headers=admin.headers).json()
    assert [e["event"] for e in page["items"]] == ["token.create", "token.create"]
    assert page["items"][0]["actor_email"] == plain.email
    assert page["items"][0]["details"]["name"] == "ci"  # newest first
    assert "atk_" not in str(page)  # no secret in the log
