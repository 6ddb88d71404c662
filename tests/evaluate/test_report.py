"""`crossrank eval --report FILE.html` and `--plot-dir DIR`: the page is parsed back and checked against the JSON.

Evaluations rerank a small C-MTEB file with the fake backend (token-overlap scores: the page's numbers are checked
against the JSON report of the same run, not judged). The fast tests lay out the page with stand-in images; the
slow ones run the command with matplotlib drawing (importing it and drawing take seconds on a busy CI machine),
and docs/evaluation/report.md's command with the English model, as a user would."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from scipy import stats
from typer.testing import CliRunner

from conftest import subprocess_env
from crossrank.cli import app
from crossrank.evaluate import METRICS, compare, evaluate, load_cmteb
from crossrank.evaluate.metrics import mean_interval, paired_interval
from crossrank.evaluate.report import render_html
from crossrank.reranker import Reranker

PNG = b"\x89PNG\r\n\x1a\n"
CELLS_PER_SET = 7 * len(METRICS)  # first stage, reranked and change with their intervals; the p-value
ROWS = [
    ("what is a panda?", ["The giant panda is a bear of China."], ["hi", "panda express menu", "a panda?"]),
    ("苹果手机", ["iPhone 15 正式发布"], ["苹果是一种水果", "苹果树的种植方法"]),
    ("capital of france", ["Paris is the capital of France."], ["France is in Europe.", "capital letters"]),
    ("boiling point of water", ["Water boils at 100 degrees Celsius."], ["point of sale", "water of life"]),
    ("who wrote hamlet", ["Shakespeare wrote the play Hamlet."], ["hamlet is a small village", "who is who"]),
]


def run_eval(cwd: Path, *args: str | Path) -> Any:
    """``crossrank eval ARGS`` in this process, from ``cwd``; the result has exit_code, stdout and stderr."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        return CliRunner().invoke(app, ["eval", *map(str, args)], env={"CROSSRANK_MODEL": None})


class _Page(HTMLParser):
    """What the tests read back: number cells (with their JSON value and the run block they sit in), images,
    the run blocks, and every attribute of every tag."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[tuple[dict[str, str], str]] = []
        self.images: list[str] = []
        self.runs: list[str] = []
        self.attributes: list[tuple[str, str]] = []
        self._cell: dict[str, str] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.attributes.extend(values.items())
        if "data-run" in values:
            self.runs.append(values["data-run"])
        if tag == "td" and "data-value" in values:
            self._cell, self._text = {**values, "run": self.runs[-1] if self.runs else ""}, []
        elif tag == "img":
            self.images.append(values["src"])

    def handle_data(self, data: str) -> None:
        self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.cells.append((self._cell, "".join(self._text)))
            self._cell = None


def parse(page_or_path: str | Path) -> _Page:
    page = _Page()
    page.feed(page_or_path.read_text(encoding="utf-8") if isinstance(page_or_path, Path) else page_or_path)
    return page


def stand_ins(*prefixes: str) -> dict[str, bytes]:
    """What ``draw`` returns for the mini set, with a distinct fake PNG in place of each plot."""
    kinds = ("metrics", "ndcg-change", "scores")
    return {f"{p}mini.{k}.png": PNG + f"{p}{k}".encode() for p in prefixes for k in kinds}


def check_self_contained(page: str) -> None:
    parsed = parse(page)
    assert not [(k, v) for k, v in parsed.attributes if k in ("src", "href") and not v.startswith("data:")]
    for marker in ("http://", "https://", "@import", "url("):
        assert marker not in page


def embedded(page: _Page) -> list[bytes]:
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    return [base64.b64decode(src.removeprefix("data:image/png;base64,")) for src in page.images]


def shown(text: str) -> list[float]:
    """The numbers a cell shows: one, two for an interval, none for a dash."""
    return [float(part) for part in text.strip("[]").split(", ") if part != "—"]


def check_cells(page: _Page, run: str, dataset: dict[str, Any]) -> int:
    """Every number cell of ``run``'s block holds the JSON value and shows it to 4 places; returns how many."""
    checked = 0
    for cell, text in page.cells:
        if cell["run"] != run or cell["data-field"].startswith("compare."):
            continue
        node: Any = dataset
        for key in cell["data-field"].split("."):  # e.g. intervals.delta, per_query.reranked.ndcg@10
            node = node[key]
        expected = node[cell["data-query"]] if "data-query" in cell else node[cell["data-metric"]]
        assert json.loads(cell["data-value"]) == expected, cell
        if cell["data-field"] == "p_values":
            assert text == "—" if expected is None else float(text) == pytest.approx(expected, rel=1e-2)
        else:
            flat = [] if expected is None else expected if isinstance(expected, list) else [expected]
            assert shown(text) == pytest.approx(flat, abs=5e-5), cell
        checked += 1
    return checked


@pytest.fixture
def mini(tmp_path: Path) -> Path:
    path = tmp_path / "mini.jsonl"
    lines = [json.dumps({"query": q, "positive": p, "negative": n}, ensure_ascii=False) for q, p, n in ROWS]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_page_holds_the_json_numbers_and_fetches_nothing_fake_backend(mini: Path, fake_reranker: Reranker) -> None:
    payload = json.loads(json.dumps(evaluate(load_cmteb(mini), fake_reranker).to_dict()))  # as --json writes it
    figures = stand_ins("")
    page = render_html(payload, figures=figures)
    parsed = parse(page)
    assert parsed.runs == ["this run"]
    assert check_cells(parsed, "this run", payload["datasets"][0]) == CELLS_PER_SET + 2 * len(ROWS)
    check_self_contained(page)
    assert embedded(parsed) == list(figures.values())


def test_compare_page_shows_both_runs_fake_backend(mini: Path, fake_reranker: Reranker) -> None:
    dataset = load_cmteb(mini)
    base = json.loads(json.dumps(evaluate(dataset, fake_reranker).to_dict()))
    new = json.loads(json.dumps(evaluate(dataset, fake_reranker, max_length=12).to_dict()))
    diff = json.loads(json.dumps(compare(base, new).to_dict()))
    diff["base"] = "base.json"
    page = render_html(new, figures=stand_ins("", "base."), baseline=base, diff=diff)
    parsed = parse(page)
    assert parsed.runs == ["base: base.json", "new: this run"]
    assert check_cells(parsed, "base: base.json", base["datasets"][0]) == CELLS_PER_SET + 2 * len(ROWS)
    assert check_cells(parsed, "new: this run", new["datasets"][0]) == CELLS_PER_SET + 2 * len(ROWS)
    # The comparison table is compare()'s rows (what --json prints as "compare"): base, new, delta, CI, p.
    rows = {r["metric"]: r for r in diff["rows"]}
    compared = [cell for cell, _ in parsed.cells if cell["data-field"].startswith("compare.")]
    assert len(compared) == 5 * len(METRICS)
    for cell in compared:
        field = cell["data-field"].removeprefix("compare.")
        assert json.loads(cell["data-value"]) == rows[cell["data-metric"]][field]
    check_self_contained(page)
    assert len(embedded(parsed)) == 6  # three plots of each run, base first


def test_text_is_escaped_fake_backend(mini: Path, fake_reranker: Reranker) -> None:
    payload = evaluate(load_cmteb(mini), fake_reranker).to_dict()
    payload["model"] = 'm"<script>alert(1)</script>'
    payload["datasets"][0]["name"] = "<img src=x onerror=alert(1)>"
    page = render_html(payload, figures={})
    assert "<script>" not in page
    assert "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_bad_destinations_exit_2_before_the_model_loads(tmp_path: Path, mini: Path) -> None:
    # No such model: had the evaluation started, the exit code would be 3.
    args = ("--data", mini, "--model", tmp_path / "no-model")
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.txt").write_text("x")
    for flag, path, message in (
        ("--report", "folder", "it is a folder"),
        ("--report", "file.txt/r.html", "cannot write the report to file.txt/r.html"),
        ("--report", "missing/r.html", "cannot write the report to missing/r.html"),
        ("--plot-dir", "file.txt", "cannot write plots to the folder file.txt"),
    ):
        done = run_eval(tmp_path, *args, flag, path)
        assert done.exit_code == 2, (flag, path, done.stderr)
        assert message in done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "missing").exists()
    assert (tmp_path / "file.txt").read_text() == "x"


def test_missing_matplotlib_says_which_extra(tmp_path: Path, mini: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    done = run_eval(tmp_path, "--data", mini, "--report", "r.html")
    assert done.exit_code == 2
    assert "needs matplotlib" in done.stderr
    assert "crossrank[eval]" in done.stderr


def test_intervals_are_the_t_tests() -> None:
    after = {"a": 0.9, "b": 0.4, "c": 0.7, "d": 0.2}
    before = {"a": 0.5, "b": 0.5, "c": 0.1, "d": 0.2, "only-before": 1.0}
    shared = ["a", "b", "c", "d"]
    paired = stats.ttest_rel([after[q] for q in shared], [before[q] for q in shared]).confidence_interval(0.95)
    assert paired_interval(after, before) == pytest.approx((paired.low, paired.high))
    single = stats.t.interval(0.95, 3, loc=0.55, scale=stats.sem(list(after.values())))
    assert mean_interval(after) == pytest.approx(single)
    assert mean_interval({"a": 0.3, "b": 0.3}) == (0.3, 0.3)
    assert mean_interval({"a": 0.3}) is None
    assert paired_interval({"a": 1.0}, {"a": 0.0}) is None


@pytest.mark.slow
def test_report_and_plot_dir_from_the_command_fake_backend(mini: Path, fake_model_dir: Path) -> None:
    folder = mini.parent
    model = ("--model", fake_model_dir, "--backend", "fake")
    done = run_eval(folder, "--data", mini, *model, "--save", "base.json", "--report", "r.html", "--plot-dir", "p")
    assert done.exit_code == 0, done.stderr
    (dataset,) = json.loads((folder / "base.json").read_text())["datasets"]
    page = parse(folder / "r.html")
    assert check_cells(page, "this run", dataset) == CELLS_PER_SET + 2 * len(ROWS)
    check_self_contained((folder / "r.html").read_text(encoding="utf-8"))
    images = embedded(page)
    assert len(images) == 3
    assert all(image.startswith(PNG) and len(image) > 1000 for image in images)
    # --plot-dir holds the same three PNGs.
    files = sorted((folder / "p").iterdir())
    assert [f.name for f in files] == ["mini.metrics.png", "mini.ndcg-change.png", "mini.scores.png"]
    assert sorted(f.read_bytes() for f in files) == sorted(images)

    # This run against the saved one, side by side; then the two saved runs, with no --data.
    args = ("--max-length", "12", "--compare", "base.json", "--save", "new.json", "--report", "c.html", "--json")
    done = run_eval(folder, "--data", mini, *model, *args)
    assert done.exit_code == 0, done.stderr
    new = json.loads(done.stdout)
    page = parse(folder / "c.html")
    assert page.runs == ["base: base.json", "new: this run"]
    assert check_cells(page, "new: this run", new["datasets"][0]) == CELLS_PER_SET + 2 * len(ROWS)
    assert len(embedded(page)) == 6
    done = run_eval(folder, "--compare", "base.json", "--compare", "new.json", "--plot-dir", "both")
    assert done.exit_code == 0, done.stderr
    names = sorted(p.name for p in (folder / "both").iterdir())
    assert names == sorted(stand_ins("", "base."))
    assert all((folder / "both" / name).read_bytes().startswith(PNG) for name in names)


@pytest.mark.slow
def test_docs_example_command_english_model(tmp_path: Path, shared_data: Path, english_model_dir: Path) -> None:
    # docs/evaluation/report.md's example command, run as users run it (a subprocess), next to ../shared.
    work, shared = tmp_path / "work", tmp_path / "shared"
    for link, target in (("data", shared_data), ("models/minilm-l6-distilled-reranker-en", english_model_dir)):
        (shared / link).parent.mkdir(parents=True, exist_ok=True)
        (shared / link).symlink_to(target)
    work.mkdir()
    command = (
        "crossrank eval --data ../shared/data/en_beir_dbpedia_subset"
        " --model ../shared/models/minilm-l6-distilled-reranker-en"
        " --max-queries 4 --top-k 10 --save run.json --report report.html --plot-dir plots"
    )
    assert command in (Path(__file__).parents[2] / "docs" / "evaluation" / "report.md").read_text(encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "crossrank", *command.split()[1:]],
        capture_output=True,
        text=True,
        cwd=work,
        env=subprocess_env(),
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (dataset,) = json.loads((work / "run.json").read_text())["datasets"]
    page = parse(work / "report.html")
    assert check_cells(page, "this run", dataset) == CELLS_PER_SET + 2 * 4
    assert len(page.images) == 3 == len(list((work / "plots").iterdir()))
