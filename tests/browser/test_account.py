"""The account page in Chromium: a new API key shown once, revoked; no CSP violation."""

from tests.browser.conftest import screenshot
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD


def test_create_and_revoke_an_api_key_and_reach_the_users_page(page, live_server):
    problems = []  # CSP refusals, and pages or assets that failed (not the favicon)
    page.on("console", lambda m: problems.append(m.text)
            if "Content Security Policy" in m.text else None)
    page.on("response", lambda r: problems.append(r.url) if r.status >= 400 else None)
    page.goto(f"{live_server.url}/login")
    page.fill("#email", ADMIN_EMAIL)
    page.fill("#password", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.click("header nav >> text=Account")
    page.wait_for_url("**/account")

    page.fill("#key-name", "laptop")
    page.click("#new-api-key button")
    key = page.inner_text("#new-key pre").strip()
    assert key.startswith("kdk_")
    screenshot(page, "account")
    row = page.locator("#api-keys tr", has_text="laptop")
    row.locator("button", has_text="Revoke").click()
    page.wait_for_selector(".notice:has-text('revoked')")
    assert page.locator("#api-keys tr", has_text="laptop").count() == 0
    assert key not in page.content()

    page.click("header nav >> text=Users")
    page.wait_for_selector(f"#users td:has-text('{ADMIN_EMAIL}')")
    screenshot(page, "admin-users")
    assert not problems, problems
