"""The /ui playground in a real headless browser (Debian's chromium, driven by Playwright's Python package) against
the real ``crossrank serve`` on the shared English model: the key prompt, a ranking read back from the page equal
to /v2/rerank's, the evidence span of a long document, the compare view, an over-limit error, a phone-width screen.

Screenshots go to ``$CROSSRANK_ARTIFACTS/ui`` (else the test's tmp folder); the test prints the folder.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server_process import ServerProcess, running_server

pytestmark = pytest.mark.slow

KEY = "playground-key"
MAX_DOCUMENTS = 8
QUERY = "where do giant pandas live?"
FILLER = "The committee met again to discuss the budget for the next year and agreed on nothing in particular. "
LONG = FILLER * 40 + "Giant pandas live in the bamboo forests of the mountains of central China. " + FILLER * 40
DOCUMENTS = [
    "Pandas is a Python library for data analysis.",
    "The red panda is a small mammal of the eastern Himalayas.",
    LONG,
    "Giant pandas live in a few mountain ranges in central China, in Sichuan, Shaanxi and Gansu.",
    "Bamboo grows quickly.",
    "The zoo in Berlin has two giant pandas on loan from China.",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="needs Playwright's Python package (pip install playwright)"
    )
    with sync_api.sync_playwright() as playwright:
        # Debian's browser, not Playwright's download (which needs the internet).
        browser = playwright.chromium.launch(executable_path=executable)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(english_model_dir: Path) -> Iterator[ServerProcess]:
    args = ["-m", str(english_model_dir), "--device", "cpu", "--served-model-name", "minilm"]
    args += ["--api-key", KEY, "--max-documents", str(MAX_DOCUMENTS)]
    with running_server(args, api_key=KEY) as server:
        yield server


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = os.environ.get("CROSSRANK_ARTIFACTS")
    folder = Path(root) / "ui" if root else tmp_path_factory.mktemp("ui")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(autouse=True)
def _print_shots(shots: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(f"\nui screenshots: {shots}")


def _api(server: ServerProcess, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/rerank", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)


def _open(browser: Any, server: ServerProcess, width: int, height: int) -> tuple[Any, list[str]]:
    """A new tab on /ui (so no key yet), and the list its console errors and page errors collect into."""
    page = browser.new_page(viewport={"width": width, "height": height})
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(f"{server.url}/ui")
    return page, problems


def _unexpected(problems: list[str], *statuses: int) -> list[str]:
    """Console and page errors but the browser's own line for each refused fetch of ``statuses``."""
    refused = [f"Failed to load resource: the server responded with a status of {status} " for status in statuses]
    return [p for p in problems if not any(p.startswith(line) for line in refused)]


def _give_key(page: Any) -> None:
    page.locator("#key-panel").wait_for(state="visible")
    page.fill("#api-key", KEY)
    page.press("#api-key", "Enter")
    page.locator("#server-status", has_text="Model minilm").wait_for()


def _ranking(page: Any, run: str) -> list[tuple[int, float]]:
    items = page.locator(f'.run[data-set="{run}"] li.result')
    return [
        (int(item.get_attribute("data-index")), float(item.get_attribute("data-relevance"))) for item in items.all()
    ]


def _assert_same(page_ranking: list[tuple[int, float]], answer: dict[str, Any]) -> None:
    assert [index for index, _ in page_ranking] == [r["index"] for r in answer["results"]]
    for (_, score), result in zip(page_ranking, answer["results"], strict=True):
        assert score == pytest.approx(result["relevance_score"], abs=1e-6)


def _submit(page: Any, documents: list[str]) -> None:
    page.fill("#documents", "\n".join(documents))
    page.fill("#query", QUERY)
    page.press("#query", "Enter")  # the keyboard path; the button does the same


def test_key_prompt_then_the_ranking_equals_v2_rerank(browser: Any, server: ServerProcess, shots: Path) -> None:
    page, problems = _open(browser, server, 1280, 900)
    assert page.locator("#key-reason").inner_text() == "This server needs an API key."
    page.fill("#api-key", "wrong-key")
    page.press("#api-key", "Enter")
    page.locator("#key-reason", has_text="refused").wait_for()
    assert page.evaluate("document.activeElement.id") == "api-key"
    _give_key(page)

    _submit(page, DOCUMENTS)
    page.locator('.run[data-set="A"] li.result').first.wait_for()
    answer = _api(server, {"query": QUERY, "documents": DOCUMENTS}).json()
    _assert_same(_ranking(page, "A"), answer)

    # The long document was read in windows: the page marks the API's evidence span inside it.
    long = next(r for r in answer["results"] if r["index"] == DOCUMENTS.index(LONG))
    assert long["chunks"] > 1
    item = page.locator(f'.run[data-set="A"] li.result[data-index="{DOCUMENTS.index(LONG)}"]')
    evidence = LONG[long["span"]["start"] : long["span"]["end"]]
    assert item.locator(".whole mark").text_content() == evidence
    assert item.locator(".excerpt mark").inner_text().startswith(evidence[:100])  # its middle is cut in the excerpt
    assert f"read in {long['chunks']} windows" in item.locator(".read").inner_text()
    timing = page.locator('.run[data-set="A"] .timing').inner_text()
    assert "server: total" in timing
    assert "tokens read on cpu" in timing
    page.screenshot(path=shots / "desktop-ranking.png", full_page=True)

    # Compare: set B reads only each document's start (aggregate first), side by side with A.
    page.check("#compare")
    page.select_option("#aggregate-b", "first")
    page.click("#submit")
    page.locator('.run[data-set="B"] li.result').first.wait_for()
    _assert_same(
        _ranking(page, "B"), _api(server, {"query": QUERY, "documents": DOCUMENTS, "aggregate": "first"}).json()
    )
    _assert_same(_ranking(page, "A"), answer)
    assert "only the start of each document" in page.locator('.run[data-set="B"] .notes').inner_text()
    page.screenshot(path=shots / "desktop-compare.png", full_page=True)
    assert _unexpected(problems, 401) == []  # the prompt's two refusals: no key, then a wrong one


def test_an_over_limit_request_shows_the_servers_message(browser: Any, server: ServerProcess, shots: Path) -> None:
    page, problems = _open(browser, server, 1280, 900)
    _give_key(page)
    documents = [f"document number {i}" for i in range(MAX_DOCUMENTS + 1)]
    refused = _api(server, {"query": QUERY, "documents": documents})
    assert refused.status_code == 413
    # Uploaded as .jsonl (strings and {"text": ...} objects), submitted with Ctrl+Enter in the documents.
    lines = [json.dumps(text if i % 2 else {"text": text}) for i, text in enumerate(documents)]
    upload = {"name": "docs.jsonl", "mimeType": "application/jsonl", "buffer": "\n".join(lines).encode()}
    page.set_input_files("#upload", upload)
    page.locator("#documents-count", has_text=f"{len(documents)} documents").wait_for()
    assert json.loads(page.input_value("#documents")) == documents
    page.fill("#query", QUERY)
    page.press("#documents", "Control+Enter")
    error = page.locator("#error")
    error.wait_for(state="visible")
    assert error.inner_text() == f"Error 413: {refused.json()['message']}"
    page.screenshot(path=shots / "desktop-error.png", full_page=True)
    assert _unexpected(problems, 401, 413) == []


def test_phone_width(browser: Any, server: ServerProcess, shots: Path) -> None:
    page, problems = _open(browser, server, 390, 844)
    _give_key(page)
    _submit(page, DOCUMENTS)
    page.locator('.run[data-set="A"] li.result').first.wait_for()
    assert len(_ranking(page, "A")) == len(DOCUMENTS)
    # One column, nothing wider than the screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=shots / "phone.png", full_page=True)
    assert _unexpected(problems, 401) == []
