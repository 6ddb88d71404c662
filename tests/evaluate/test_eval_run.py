"""evaluate(): reranking with real and fake-backend models, reports, TREC runs and comparisons.

The pipeline tests (``..._fake_backend``) rerank with ``fake_reranker`` (token-overlap scores): they check the
pools, reports and files, not a model's judgement; the English model's NDCG gain over BM25 is the slow test."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from crossrank import Reranker
from crossrank.errors import ConfigError, DataFormatError, InputError
from crossrank.evaluate import (
    METRICS,
    Dataset,
    compare,
    evaluate,
    find_datasets,
    load_cmteb,
    load_trec_run,
    write_trec_run,
)

CMTEB = [
    {
        "query": "what is a panda?",
        "positive": ["The giant panda is a bear of China."],
        "negative": ["hi", "panda express menu"],
    },
    {"query": "苹果手机", "positive": ["iPhone 15 正式发布"], "negative": ["苹果是一种水果", "苹果树的种植方法"]},
    {
        "query": "capital of france",
        "positive": ["Paris is the capital of France."],
        "negative": ["France is in Europe."],
    },
]


@pytest.fixture
def cmteb(tmp_path: Path) -> Dataset:
    path = tmp_path / "mini.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in CMTEB), encoding="utf-8")
    return load_cmteb(path)


@pytest.mark.slow
def test_real_reranker_beats_bm25_on_the_english_set(shared_data: Path, english_reranker: Reranker) -> None:
    # All 40 queries, BM25's top 20 each (800 pairs, a fifth of the full run; the README has the full
    # top-100 numbers): reranking the top 20 already moves NDCG@10 well above BM25's 0.3476.
    report = evaluate(shared_data / "en_beir_dbpedia_subset", english_reranker, top_k=20)
    (result,) = report.datasets
    assert (result.first_stage, result.queries, result.pairs) == ("candidates", 40, 800)
    assert round(result.metrics["ndcg@10"], 4) == 0.3476  # the top 10 of the top 20 is the given BM25 top 10
    assert result.reranked["ndcg@10"] > result.metrics["ndcg@10"] + 0.05
    assert result.reranked["mrr@10"] > result.metrics["mrr@10"]
    assert result.p_values["ndcg@10"] is not None
    assert result.p_values["ndcg@10"] < 0.05
    # Reranking reorders the same 20 documents, so recall at 100 cannot move.
    assert result.reranked["recall@100"] == result.metrics["recall@100"]
    assert result.p_values["recall@100"] is None
    assert report.max_length == 512
    # The run is the façade's own ranking of each query's candidates.
    (dataset,) = find_datasets(shared_data / "en_beir_dbpedia_subset")
    query_id = next(iter(dataset.queries))
    assert dataset.candidates is not None
    docs = dataset.candidates[query_id][:20]
    expected = english_reranker.rerank(dataset.queries[query_id], [dataset.documents[d] for d in docs])
    assert [d for d, _ in result.run[query_id]] == [docs[r.index] for r in expected.results]
    assert [s for _, s in result.run[query_id]] == pytest.approx([r.score for r in expected.results], abs=1e-4)


def test_cmteb_pool_is_ordered_by_bm25_then_reranked_fake_backend(cmteb: Dataset, fake_reranker: Reranker) -> None:
    seen: list[tuple[str, int, int]] = []
    report = evaluate(cmteb, fake_reranker, progress=lambda *args: seen.append(args))
    (result,) = report.datasets
    assert (result.first_stage, result.queries, result.pairs) == ("bm25-pool", 3, 8)
    assert seen[0] == ("mini", 0, 8)
    assert seen[-1] == ("mini", 8, 8)
    for query_id, query in cmteb.queries.items():
        assert cmteb.candidates is not None
        pool = cmteb.candidates[query_id]
        expected = fake_reranker.rerank(query, [cmteb.documents[d] for d in pool])
        assert [d for d, _ in result.run[query_id]] == [pool[r.index] for r in expected.results]
    assert set(result.metrics) == set(METRICS)
    assert result.per_query["reranked"]["ndcg@10"].keys() == {"1", "2", "3"}
    assert result.delta["map"] == pytest.approx(result.reranked["map"] - result.metrics["map"])


def test_report_json_trec_run_and_compare_fake_backend(tmp_path: Path, cmteb: Dataset, fake_reranker: Reranker) -> None:
    long = evaluate(cmteb, fake_reranker).to_dict()
    short = evaluate(cmteb, fake_reranker, max_length=12)
    assert short.max_length == 12
    saved = tmp_path / "short.json"
    saved.write_text(json.dumps(short.to_dict()))
    diff = compare(long, saved)
    assert (diff.base, diff.new) == ("this run", str(saved))
    assert [(r.dataset, r.metric) for r in diff.rows] == [("mini", m) for m in METRICS]
    for row in diff.rows:
        assert row.base == pytest.approx(long["datasets"][0]["reranked"][row.metric])
        assert row.new == pytest.approx(short.datasets[0].reranked[row.metric])
        assert row.queries == 3
    same = compare(saved, saved)
    assert all(r.delta == 0 and r.p_value is None for r in same.rows)
    run = tmp_path / "run.trec"
    write_trec_run(short.datasets[0], run)
    assert load_trec_run(run) == {q: [d for d, _ in docs] for q, docs in short.datasets[0].run.items()}
    spaced = dataclasses.replace(short.datasets[0], run={"q 1": [("d1", 1.0)]})
    with pytest.raises(InputError, match="id 'q 1' of mini contains whitespace"):
        write_trec_run(spaced, tmp_path / "bad.trec")


def test_bad_arguments_are_config_errors_fake_backend(cmteb: Dataset, fake_reranker: Reranker, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="top_k must be a positive integer"):
        evaluate(cmteb, fake_reranker, top_k=0)
    with pytest.raises(ConfigError, match="max_queries must be a positive integer"):
        evaluate(cmteb, fake_reranker, max_queries=0)
    no_candidates = Dataset(name="x", path="x", queries={"q": "a"}, documents={"d": "a"}, qrels={"q": {"d": 1}})
    with pytest.raises(ConfigError, match="x has no candidate lists"):
        evaluate(no_candidates, fake_reranker, first_stage="candidates")
    bad = tmp_path / "bad.json"
    bad.write_text('{"datasets": [{"name": "mini"}]}')
    with pytest.raises(DataFormatError, match=r"bad.json: not a saved crossrank evaluation"):
        compare(bad, bad)
