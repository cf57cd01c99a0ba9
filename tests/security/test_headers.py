"""Security headers on every response; framing only for the embeddable demo view; templates
that a strict Content-Security-Policy does not break."""

import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

from app.web.paths import STATIC_DIR, TEMPLATES_DIR


def policy(response) -> dict[str, str]:
    header = response.headers["content-security-policy"]
    return {part.split()[0]: part.split(" ", 1)[1] for part in header.split("; ")}


def test_every_response_has_the_baseline_headers(client, admin):
    for path in ("/login", "/api/v1/health", "/static/kodiak.css", "/api/v1/nothing-here",
                 "/projects"):
        answer = client.get(path, follow_redirects=False)
        assert answer.headers["x-content-type-options"] == "nosniff", path
        assert answer.headers["referrer-policy"] == "same-origin", path
        assert answer.headers["x-frame-options"] == "DENY", path
        csp = policy(answer)
        assert csp["script-src"] == "'self'" and csp["default-src"] == "'self'", path
        assert csp["frame-ancestors"] == "'none'" and csp["object-src"] == "'none'", path
        assert csp["form-action"] == "'self'" and csp["base-uri"] == "'self'", path


def test_only_the_embed_view_of_a_demo_may_be_framed(client):
    embed = client.get("/demo/bears?embed=1")
    assert policy(embed)["frame-ancestors"] == "*"
    assert "x-frame-options" not in embed.headers
    assert policy(embed)["script-src"] == "'self'"
    for path in ("/demo/bears", "/demo/bears?embed=0", "/demo/bears?x=embed=1"):
        answer = client.get(path)
        assert policy(answer)["frame-ancestors"] == "'none'", path
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert client.get("/login?embed=1").headers["x-frame-options"] == "DENY"


def test_the_demo_page_may_use_blob_images_and_the_webcam(client):
    csp = policy(client.get("/demo/bears?embed=1"))
    assert "blob:" in csp["img-src"] and "blob:" in csp["media-src"]
    assert csp["connect-src"] == "'self'"


class _Resources(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        if tag == "script" and values.get("src"):
            self.urls.append(("script-src", values["src"]))
        if tag == "link" and values.get("rel") == "stylesheet":
            self.urls.append(("style-src", values["href"]))
        if tag == "link" and "icon" in (values.get("rel") or ""):
            self.urls.append(("img-src", values["href"]))


def test_the_api_docs_pages_load_only_the_apps_own_files(client):
    for path in ("/api/docs", "/redoc"):
        answer = client.get(path)
        assert answer.status_code == 200
        csp = policy(answer)
        assert csp["frame-ancestors"] == "'none'"
        assert csp["script-src"] == "'self'", "no inline script, no CDN"
        assert "http" not in answer.headers["content-security-policy"]
        parser = _Resources()
        parser.feed(answer.text)
        assert parser.urls, path
        for directive, url in parser.urls:
            assert not urlsplit(url).netloc and url.startswith("/"), (path, directive, url)
            assert "'self'" in csp[directive].split(), (path, directive, url)
            assert client.get(url).status_code == 200, url


INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>")
INLINE_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.IGNORECASE)


def test_templates_and_scripts_need_no_inline_script():
    for template in sorted(TEMPLATES_DIR.glob("*.html")):
        text = template.read_text()
        assert not INLINE_SCRIPT.search(text), template.name
        assert not INLINE_HANDLER.search(text), template.name
        assert "javascript:" not in text, template.name
    for script in sorted(STATIC_DIR.glob("*.js")):
        text = script.read_text()
        assert not re.search(r"\beval\(|new Function\(|setAttribute\(\s*[\"']on", text), script
        for markup in re.findall(r"innerHTML\s*=\s*(['\"`].*?['\"`]);", text):
            assert not INLINE_HANDLER.search(markup), script
