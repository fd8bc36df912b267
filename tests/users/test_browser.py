"""In Chromium: an admin invites a user from the Users page; the user opens the one-time link,
sets a password and logs in."""
from __future__ import annotations

from tests.support.browser import browser, login, needs_chromium, new_page  # noqa: F401
from tests.support.live_server import live_server  # noqa: F401  (fixture)

pytestmark = needs_chromium


def test_admin_invites_a_user_who_sets_a_password_and_logs_in(browser, live_server, db, factories):  # noqa: F811
    admin = factories.make_actor(db, is_admin=True)
    page = login(browser, live_server, admin.email)
    page.click("[data-testid=users-link]")
    page.wait_for_url("**/admin/users")
    page.fill("#invite-user [name=email]", "Invited.Person@example.com")
    page.fill("#invite-user [name=name]", "Invited <b>Person</b>")
    page.click("#invite-user button[type=submit]")
    link = page.locator("[data-testid=link]").input_value()
    assert "/invite/" in link
    assert page.locator("[data-testid=invitations] tr:has-text('invited.person@example.com')").count() == 1
    page.reload()                                   # no second POST: the same link stays valid
    assert page.url.endswith("/admin/users") and page.locator("[data-testid=link]").count() == 0

    guest = new_page(browser, live_server)
    guest.goto(link)
    assert "invited.person@example.com" in guest.inner_text("#invite")
    guest.fill("[name=password]", "too short")
    guest.fill("[name=password_again]", "too short")
    guest.evaluate("document.querySelectorAll('#invite input').forEach(i => i.removeAttribute('minlength'))")
    guest.click("#invite button[type=submit]")
    guest.wait_for_selector(".flash.error:has-text('at least')")
    guest.fill("[name=password]", "a good long passphrase")
    guest.fill("[name=password_again]", "a good long passphrase")
    guest.click("#invite button[type=submit]")
    guest.wait_for_selector("[data-testid=invite-done]")
    guest.click("#invite a[href='/login']")
    guest.fill("input[name=email]", "invited.person@example.com")
    guest.fill("input[name=password]", "a good long passphrase")
    guest.click("button[type=submit]")
    guest.wait_for_url("**/projects")
    assert guest.inner_text("[data-testid=who]") == "invited.person@example.com"
    guest.goto(link)                                # the link worked once
    assert "already used" in guest.inner_text("main")
    assert page.js_errors == [] and guest.js_errors == []
