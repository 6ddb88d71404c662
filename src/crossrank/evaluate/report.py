"""``crossrank eval --report FILE.html`` and ``--plot-dir DIR``: an evaluation as one self-contained page.

Everything shown is read from the JSON report (``EvalReport.to_dict()`` or a saved ``--json`` file) and, for a
comparison, ``CompareReport.to_dict()``: this module lays those numbers out and draws them; it computes no metric,
interval or p-value of its own. Plots are PNGs drawn by matplotlib's Agg renderer, embedded as ``data:`` URIs, so
the page loads nothing from anywhere and can be mailed as it is.

>>> figures = draw(report.to_dict())
>>> write_report("report.html", report.to_dict(), figures=figures)
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from crossrank.errors import ConfigError
from crossrank.evaluate.extras import require
from crossrank.evaluate.metrics import CONFIDENCE, METRICS

__all__ = ["check_destinations", "draw", "render_html", "write_plots", "write_report"]

Payload = Mapping[str, Any]

# What each plot shows, by the suffix of its file name.
_PLOTS = {
    "metrics": "First stage vs reranked, mean over queries with {level:.0%} t-intervals",
    "ndcg-change": "Per-query NDCG@10 change (reranked - first stage), sorted",
    "scores": "Reranked scores of relevant and non-relevant documents",
}
_GREY, _BLUE, _GREEN, _RED = "#8d99a6", "#2f6fde", "#2e9d5b", "#d0453b"
_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2430;margin:0;background:#f6f7f9}
main{max-width:1280px;margin:0 auto;padding:1.5rem}
h1{font-size:1.6rem;margin:0 0 .5rem;overflow-wrap:anywhere}
h2{margin:2rem 0 .5rem;border-bottom:2px solid #d5dae0}h3{margin:1rem 0 .4rem}
table{border-collapse:collapse;margin:.5rem 0;background:#fff}
th,td{padding:.25rem .6rem;border:1px solid #d5dae0;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
.up{color:#1f7a44}.down{color:#b3261e}.note{color:#55606e;font-size:.9rem}
.side{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,420px),1fr));gap:1.5rem}
.side>*{min-width:0}.wide{overflow-x:auto}
.run{background:#fff;border:1px solid #d5dae0;padding:.6rem 1rem;border-radius:6px}
.figs{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,560px),1fr));gap:.8rem}
figure{margin:.6rem 0}figure img{max-width:100%;height:auto;border:1px solid #e3e6ea;background:#fff}
figcaption{font-size:.9rem;color:#55606e}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.1rem 1rem;margin:.3rem 0}
dt{color:#55606e}dd{margin:0;overflow-wrap:anywhere}
details{margin:.4rem 0}summary{cursor:pointer}.scroll{max-height:28rem;overflow:auto}
"""


def check_destinations(report: Path | None, plot_dir: Path | None) -> None:
    """Fail now, before a long evaluation, if matplotlib is missing or either destination cannot be written.

    Creates ``plot_dir`` (and its parents) when it does not exist.
    """
    if report is not None:
        _check_file(report)
    if plot_dir is not None:
        _check_folder(plot_dir)
    if report is not None or plot_dir is not None:
        require("matplotlib", "the report's plots")


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise ConfigError(
            f"cannot write the report to {path}: it is a folder",
            fix=f"give a file name: --report {path / 'report.html'}",
        )
    existed = path.exists()
    try:
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cannot write the report to {path} ({exc.strerror})",
            fix="give --report a file in a folder that exists and that you may write to",
        ) from None
    if not existed:
        path.unlink()


def _check_folder(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cannot write plots to the folder {path} ({exc.strerror})",
            fix="give --plot-dir a folder (new or existing) that you may write to, not a file",
        ) from None


def _slugs(payload: Payload, prefix: str) -> list[str]:
    """File name stems, one per data set: the name made file-safe, numbered where two would collide."""
    stems: list[str] = []
    for dataset in payload["datasets"]:
        stem = prefix + (re.sub(r"[^A-Za-z0-9._-]+", "_", dataset["name"]).strip("._") or "dataset")
        stems.append(stem if stem not in stems else f"{stem}-{len(stems) + 1}")
    return stems


def draw(payload: Payload, baseline: Payload | None = None) -> dict[str, bytes]:
    """PNG file name -> image, three per data set (a baseline's prefixed ``base.``); a plot whose data an older
    saved report lacks is left out."""
    figures: dict[str, bytes] = {}
    for run, prefix in ((payload, ""), (baseline, "base.")):
        if run is None:
            continue
        for stem, dataset in zip(_slugs(run, prefix), run["datasets"], strict=True):
            for kind, drawer in (("metrics", _metrics_plot), ("ndcg-change", _change_plot), ("scores", _score_plot)):
                image = drawer(dataset)
                if image is not None:
                    figures[f"{stem}.{kind}.png"] = image
    return figures


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _figure() -> tuple[Any, Any]:
    # matplotlib.figure.Figure, not pyplot: no global backend or figure registry; PNGs are drawn by Agg.
    figure = require("matplotlib.figure", "the report's plots").Figure(
        figsize=(6.4, 3.2), dpi=100, layout="constrained"
    )
    return figure, figure.subplots()


def _metrics_plot(dataset: Payload) -> bytes | None:
    names = [m for m in METRICS if m in dataset["metrics"]]
    figure, axes = _figure()
    intervals = dataset.get("intervals", {})
    for shift, key, interval_key, label, colour in (
        (-0.2, "metrics", "first_stage", "first stage", _GREY),
        (0.2, "reranked", "reranked", "reranked", _BLUE),
    ):
        values = [dataset[key][m] for m in names]
        bounds = [intervals.get(interval_key, {}).get(m) or (v, v) for m, v in zip(names, values, strict=True)]
        errors = [
            [v - low for v, (low, _) in zip(values, bounds, strict=True)],
            [high - v for v, (_, high) in zip(values, bounds, strict=True)],
        ]
        positions = [i + shift for i in range(len(names))]
        axes.bar(positions, values, 0.4, yerr=errors, capsize=3, label=label, color=colour)
    axes.set_xticks(range(len(names)), names)
    axes.set_ylim(0, 1.05)
    axes.set_title(f"{dataset['name']}: {dataset['queries']} queries", fontsize=10)
    axes.legend(loc="upper left", fontsize=8)
    return _png(figure)


def _changes(dataset: Payload) -> list[tuple[str, float, float]]:
    """(query id, first-stage NDCG@10, reranked NDCG@10), best gain first, ties by query id."""
    before = dataset["per_query"]["first_stage"]["ndcg@10"]
    after = dataset["per_query"]["reranked"]["ndcg@10"]
    rows = [(q, before[q], after[q]) for q in after if q in before]
    return sorted(rows, key=lambda row: (-(row[2] - row[1]), row[0]))


def _tally(changes: Sequence[float]) -> str:
    wins, losses = sum(c > 0 for c in changes), sum(c < 0 for c in changes)
    return f"{wins} wins, {losses} losses, {len(changes) - wins - losses} ties"


def _change_plot(dataset: Payload) -> bytes | None:
    if "first_stage" not in dataset.get("per_query", {}):
        return None
    changes = [after - before for _, before, after in _changes(dataset)]
    figure, axes = _figure()
    colours = [_GREEN if c > 0 else _RED if c < 0 else _GREY for c in changes]
    axes.bar(range(len(changes)), changes, 1.0, color=colours)
    axes.axhline(0, color="#1d2430", linewidth=0.8)
    axes.set_xlabel("queries, sorted by change", fontsize=9)
    axes.set_ylabel("NDCG@10 change", fontsize=9)
    axes.set_title(f"{dataset['name']}: {_tally(changes)}", fontsize=10)
    return _png(figure)


def _score_plot(dataset: Payload) -> bytes | None:
    histogram = dataset.get("score_histogram")
    if not histogram or not histogram["edges"]:
        return None
    figure, axes = _figure()
    for key, label, colour in (("non_relevant", "non-relevant", _GREY), ("relevant", "relevant", _BLUE)):
        counts = histogram[key]
        total = sum(counts) or 1
        # Shares, not counts: relevant documents are usually far fewer, and the shapes are what matter.
        axes.stairs(
            [c / total for c in counts],
            histogram["edges"],
            fill=True,
            alpha=0.55,
            color=colour,
            label=f"{label} ({sum(counts)})",
        )
    axes.set_xlabel("reranked score", fontsize=9)
    axes.set_ylabel("share of the group", fontsize=9)
    axes.set_title(f"{dataset['name']}: score distributions", fontsize=10)
    axes.legend(fontsize=8)
    return _png(figure)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _cell(text: str, value: object, *, trend: float | None = None, **attributes: str) -> str:
    """A number's cell: the text shown, and the exact JSON value in ``data-value`` (what tests read back);
    ``trend`` colours a change green (up) or red (down)."""
    extra = "".join(f' data-{name}="{_e(v)}"' for name, v in attributes.items())
    return f'<td{_trend(trend)}{extra} data-value="{_e(json.dumps(value))}">{_e(text)}</td>'


def _number(value: float | None, signed: bool = False) -> str:
    return "—" if value is None else f"{value:+.4f}" if signed else f"{value:.4f}"


def _interval(value: Sequence[float] | None, signed: bool = False) -> str:
    return "—" if value is None else f"[{_number(value[0], signed)}, {_number(value[1], signed)}]"


def _p(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def _trend(value: float | None) -> str:
    return "" if not value else ' class="up"' if value > 0 else ' class="down"'


def _metrics_table(dataset: Payload) -> str:
    intervals = dataset.get("intervals", {})
    level = f"{CONFIDENCE:.0%}"
    rows = [
        f"<tr><th>metric</th><th>first stage</th><th>{level} CI</th><th>reranked</th><th>{level} CI</th>"
        f"<th>change</th><th>{level} CI</th><th>p (paired t)</th></tr>"
    ]
    for metric in (m for m in METRICS if m in dataset["metrics"]):
        first, after, delta = dataset["metrics"][metric], dataset["reranked"][metric], dataset["delta"][metric]
        spans = {key: intervals.get(key, {}).get(metric) for key in ("first_stage", "reranked", "delta")}
        p = dataset["p_values"].get(metric)
        rows.append(
            f"<tr><td>{_e(metric)}</td>"
            + _cell(_number(first), first, field="metrics", metric=metric)
            + _cell(_interval(spans["first_stage"]), spans["first_stage"], field="intervals.first_stage", metric=metric)
            + _cell(_number(after), after, field="reranked", metric=metric)
            + _cell(_interval(spans["reranked"]), spans["reranked"], field="intervals.reranked", metric=metric)
            + _cell(_number(delta, signed=True), delta, trend=delta, field="delta", metric=metric)
            + _cell(_interval(spans["delta"], signed=True), spans["delta"], field="intervals.delta", metric=metric)
            + _cell(_p(p), p, field="p_values", metric=metric)
            + "</tr>"
        )
    return '<div class="wide"><table>' + "".join(rows) + "</table></div>"


def _changes_table(dataset: Payload) -> str:
    if "first_stage" not in dataset.get("per_query", {}):
        return ""
    changes = _changes(dataset)
    rows = "".join(
        f"<tr><td>{_e(q)}</td>"
        + _cell(_number(before), before, field="per_query.first_stage.ndcg@10", query=q)
        + _cell(_number(after), after, field="per_query.reranked.ndcg@10", query=q)
        + f"<td{_trend(after - before)}>{_number(after - before, signed=True)}</td></tr>"
        for q, before, after in changes
    )
    return (
        f"<details><summary>Per-query NDCG@10, sorted by change: {_tally([a - b for _, b, a in changes])}</summary>"
        '<div class="scroll"><table><tr><th>query</th>'
        f"<th>first stage</th><th>reranked</th><th>change</th></tr>{rows}</table></div></details>"
    )


def _figures_html(figures: Mapping[str, bytes], stem: str) -> str:
    parts = []
    for kind, caption in _PLOTS.items():
        image = figures.get(f"{stem}.{kind}.png")
        if image is None:
            continue
        data = base64.b64encode(image).decode("ascii")
        text = _e(caption.format(level=CONFIDENCE))
        parts.append(
            f'<figure><img alt="{text}" src="data:image/png;base64,{data}"><figcaption>{text}</figcaption></figure>'
        )
    return f'<div class="figs">{"".join(parts)}</div>'


def _dataset_block(dataset: Payload, stem: str, figures: Mapping[str, bytes], label: str) -> str:
    summary = (
        f"first stage: {dataset['first_stage']} · {dataset['queries']} queries"
        f" ({dataset.get('skipped_queries', 0)} unjudged skipped) · {dataset['pairs']} pairs reranked"
        f" · {dataset.get('pairs_per_second', 0.0):,.0f} pairs/s"
    )
    return (
        f'<div class="block" data-run="{_e(label)}"><h3>{_e(label)}</h3><p class="note">{_e(summary)}</p>'
        f"{_metrics_table(dataset)}{_figures_html(figures, stem)}{_changes_table(dataset)}</div>"
    )


def _or_dash(value: Any) -> Any:
    return "—" if value is None else value


def _run_block(payload: Payload, label: str) -> str:
    keys = ("model", "family", "instruction", "device", "dtype", "max_length", "top_k", "created", "version")
    # A cross-encoder has no instruction, and saves from before families exist have neither.
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(_or_dash(payload.get(k)))}</dd>" for k in keys)
    return f'<div class="run"><h3>{_e(label)}</h3><dl>{items}</dl></div>'


def _compare_table(rows: Sequence[Payload]) -> str:
    level = f"{CONFIDENCE:.0%}"
    body = "".join(
        f"<tr><td>{_e(r['metric'])}</td>"
        + _cell(_number(r["base"]), r["base"], field="compare.base", metric=r["metric"])
        + _cell(_number(r["new"]), r["new"], field="compare.new", metric=r["metric"])
        + _cell(
            _number(r["delta"], signed=True), r["delta"], trend=r["delta"], field="compare.delta", metric=r["metric"]
        )
        + _cell(
            _interval(r.get("interval"), signed=True), r.get("interval"), field="compare.interval", metric=r["metric"]
        )
        + _cell(_p(r["p_value"]), r["p_value"], field="compare.p_value", metric=r["metric"])
        + f"<td>{r['queries']}</td></tr>"
        for r in rows
    )
    return (
        '<div class="wide"><table><tr><th>metric (reranked)</th><th>base</th><th>new</th><th>change</th>'
        f"<th>{level} CI</th>"
        f"<th>p (paired t)</th><th>shared queries</th></tr>{body}</table></div>"
    )


def render_html(
    payload: Payload,
    *,
    figures: Mapping[str, bytes],
    baseline: Payload | None = None,
    diff: Payload | None = None,
) -> str:
    """The page: per data set the metrics with intervals, the plots in ``figures`` (see :func:`draw`) and the
    per-query changes; with ``baseline`` and ``diff`` (``CompareReport.to_dict()``) both runs side by side."""
    new_label = str(diff["new"]) if diff is not None else "this run"
    base_label = str(diff["base"]) if diff is not None else "base"
    level = f"{CONFIDENCE:.0%}"
    parts = [
        f"<h1>crossrank evaluation: {_e(payload.get('model', ''))}</h1>",
        f"<p class=\"note\">Intervals are {level} Student's t intervals over queries; a change's interval and p-value "
        "are the paired t-test's (reranked vs first stage, or new vs base in a comparison). Metrics are trec_eval's "
        "(ir-measures); NDCG uses graded gain, the others count grade &ge; 1 as relevant.</p>",
    ]
    if baseline is not None:
        runs = _run_block(baseline, "base: " + base_label) + _run_block(payload, "new: " + new_label)
        parts.append(f'<div class="side">{runs}</div>')
    else:
        parts.append(_run_block(payload, new_label))
    base_sets = (
        {d["name"]: (d, stem) for d, stem in zip(baseline["datasets"], _slugs(baseline, "base."), strict=True)}
        if baseline
        else {}
    )
    for dataset, stem in zip(payload["datasets"], _slugs(payload, ""), strict=True):
        name = dataset["name"]
        parts.append(f'<section data-dataset="{_e(name)}"><h2>{_e(name)}</h2>')
        if name in base_sets and diff is not None:
            rows = [r for r in diff["rows"] if r["dataset"] == name]
            base_set, base_stem = base_sets[name]
            parts.append(f"<h3>new vs base, after reranking</h3>{_compare_table(rows)}")
            parts.append(
                f'<div class="side">{_dataset_block(base_set, base_stem, figures, "base: " + base_label)}'
                f"{_dataset_block(dataset, stem, figures, 'new: ' + new_label)}</div>"
            )
        else:
            parts.append(_dataset_block(dataset, stem, figures, new_label))
        parts.append("</section>")
    for name in (n for n in base_sets if n not in {d["name"] for d in payload["datasets"]}):
        parts.append(f'<p class="note">Only in base: {_e(name)}</p>')
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>crossrank evaluation: {_e(payload.get('model', ''))}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(parts)}</main></body></html>\n"
    )


def write_report(
    path: str | Path,
    payload: Payload,
    *,
    figures: Mapping[str, bytes] | None = None,
    baseline: Payload | None = None,
    diff: Payload | None = None,
) -> None:
    """Write :func:`render_html`'s page to ``path`` (drawing the plots unless ``figures`` are given)."""
    figures = draw(payload, baseline) if figures is None else figures
    page = render_html(payload, figures=figures, baseline=baseline, diff=diff)
    Path(path).write_text(page, encoding="utf-8")


def write_plots(directory: str | Path, figures: Mapping[str, bytes]) -> list[Path]:
    """Write :func:`draw`'s PNGs into ``directory`` (created if missing); returns their paths."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, image in figures.items():
        (folder / name).write_bytes(image)
        paths.append(folder / name)
    return paths
