"""The inbox page's shell (static/inbox.js fills it from the API; tests/browser drives it)."""

from tests.web.test_pages import bears, csrf  # noqa: F401  (fixtures)


def test_inbox_page_is_a_project_tab_with_its_script(client, bears):  # noqa: F811
    page = client.get(f"/projects/{bears}/inbox")
    assert page.status_code == 200
    assert f'href="/projects/{bears}/inbox" aria-current="page"' in page.text
    assert f'id="inbox" data-project="{bears}" data-similar=""' in page.text
    assert '<script type="module" src="/static/inbox.js">' in page.text
    assert "<option>grizzly</option>" in page.text  # the label chooser has the labels
    assert 'id="empty"' in page.text and "no label yet (inbox)" in page.text
    assert client.get("/static/inbox.js").status_code == 200


def test_find_similar_opens_the_inbox_on_that_image(client, bears):  # noqa: F811
    grid = client.get(f"/projects/{bears}/images")
    assert 'data-command="similar"' in grid.text
    page = client.get(f"/projects/{bears}/inbox?similar=7")
    assert 'data-similar="7"' in page.text
    assert client.get(f"/projects/{bears}/inbox?similar=x").status_code == 400


def test_upload_form_offers_the_inbox(client, bears):  # noqa: F811
    page = client.get(f"/projects/{bears}")
    assert '<option value="" data-inbox>no label yet (inbox)</option>' in page.text
    assert f'href="/projects/{bears}/inbox"' in page.text
