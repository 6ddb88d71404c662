"""The /ui playground's files, in this process on the fake backend: served with a self-only CSP, open without a
key while the API it calls stays behind it, gone with ``--no-ui``, and nothing in them reaches another origin.
The page itself runs in a real browser in test_ui_browser.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib.resources import files
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crossrank import Reranker
from crossrank.errors import ModelError
from crossrank.server import ServerOptions, create_app
from crossrank.settings import Settings

# Path -> (the shipped file, its media type).
ASSETS = {
    "/ui": ("index.html", "text/html"),
    "/ui/app.js": ("app.js", "text/javascript"),
    "/ui/app.css": ("app.css", "text/css"),
}
SHIPPED = [item for item in files("crossrank.server.ui").iterdir() if item.name != "__init__.py" and item.is_file()]


def _no_model() -> Reranker:
    # Serving files and refusing keys needs no model; loading one would take seconds of these tests' time.
    raise ModelError("no model in these tests")


def _client(**options: Any) -> Iterator[TestClient]:
    with TestClient(create_app(ServerOptions(model_name="m", **options), load=_no_model)) as client:
        yield client


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    yield from _client()


@pytest.fixture(scope="module")
def keyed() -> Iterator[TestClient]:
    yield from _client(api_keys=("secret",))


@pytest.mark.parametrize("path", ASSETS)
def test_page_and_assets_are_served_with_a_self_only_csp(client: TestClient, path: str) -> None:
    name, media_type = ASSETS[path]
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media_type)
    policy = dict(part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'"
    for directive in ("script-src", "style-src", "connect-src"):
        assert policy[directive] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content == files("crossrank.server.ui").joinpath(name).read_bytes()


def test_the_page_loads_its_assets_by_relative_links(client: TestClient) -> None:
    page = client.get("/ui").text
    assert 'src="ui/app.js"' in page
    assert 'href="ui/app.css"' in page


def test_the_page_loads_without_a_key_but_the_api_it_calls_does_not(keyed: TestClient) -> None:
    for path in ASSETS:
        assert keyed.get(path).status_code == 200
    assert keyed.get("/info").status_code == 401
    assert keyed.post("/v2/rerank", json={"query": "q", "documents": ["d"]}).status_code == 401
    assert keyed.get("/info", headers={"Authorization": "Bearer secret"}).status_code == 200


def test_no_ui_answers_404() -> None:
    for client in _client(ui=False):
        for path in ASSETS:
            assert client.get(path).status_code == 404


def test_the_ui_setting_reaches_the_server_options() -> None:
    assert ServerOptions.from_settings(Settings()).ui is True
    assert ServerOptions.from_settings(Settings.model_validate({"ui": False})).ui is False


def test_the_page_is_not_in_the_openapi_document(client: TestClient) -> None:
    assert not any(path.startswith("/ui") for path in client.get("/openapi.json").json()["paths"])


def test_shipped_files_reach_no_other_origin_and_write_no_markup() -> None:
    assert {item.name for item in SHIPPED} == {name for name, _ in ASSETS.values()}
    for item in SHIPPED:
        text = item.read_text()
        assert not re.search(r"[a-z]+://|(?:src|href|url)\s*[=(]\s*[\"']?//", text, re.IGNORECASE), item.name
        # Data reaches the page as text nodes only; the CSP forbids inline code, so none may be written.
        for forbidden in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "@import"):
            assert forbidden not in text, (item.name, forbidden)
    page = files("crossrank.server.ui").joinpath("index.html").read_text()
    assert re.findall(r"<script\b[^>]*>", page) == ['<script src="ui/app.js" defer>']
    assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=", page)
