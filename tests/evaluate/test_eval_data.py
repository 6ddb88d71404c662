"""Loaders: BEIR folders, candidates (JSONL and TREC run), C-MTEB JSONL, the shared sets, malformed lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crossrank.errors import DataFormatError, InputError
from crossrank.evaluate import find_datasets, load_beir, load_cmteb, load_trec_run

CORPUS = [
    {"_id": "d1", "title": "Giant panda", "text": "A bear native to China."},
    {"_id": "d2", "title": "", "text": "Red foxes live in Europe."},
    {"_id": 3, "text": "Numeric id, no title."},
]
QUERIES = [{"_id": "q1", "text": "what is a panda"}, {"_id": "q2", "text": "fox"}, {"_id": "q3", "text": "unjudged"}]


def _jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def make_beir(root: Path, *, qrels_in_folder: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    _jsonl(root / "corpus.jsonl", CORPUS)
    _jsonl(root / "queries.jsonl", QUERIES)
    qrels = "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\nq2\td2\t1\n"
    if qrels_in_folder:
        (root / "qrels").mkdir()
        (root / "qrels" / "test.tsv").write_text(qrels)
        (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\n")
    else:
        (root / "qrels.tsv").write_text(qrels)
    return root


def test_beir_folder_loads_with_title_joined_to_text(tmp_path: Path) -> None:
    dataset = load_beir(make_beir(tmp_path / "set"))
    assert dataset.name == "set"
    assert dataset.documents == {
        "d1": "Giant panda A bear native to China.",
        "d2": "Red foxes live in Europe.",
        "3": "Numeric id, no title.",
    }
    assert dataset.queries == {"q1": "what is a panda", "q2": "fox", "q3": "unjudged"}
    assert dataset.qrels == {"q1": {"d1": 2, "d2": 0}, "q2": {"d2": 1}}
    assert dataset.candidates is None


def test_beir_qrels_folder_picks_the_split(tmp_path: Path) -> None:
    root = make_beir(tmp_path / "set", qrels_in_folder=True)
    assert load_beir(root).qrels == {"q1": {"d1": 2, "d2": 0}, "q2": {"d2": 1}}
    assert load_beir(root, split="train").qrels == {"q1": {"d2": 1}}
    with pytest.raises(DataFormatError, match=r"no qrels.tsv and no qrels/dev.tsv \(qrels/\*.tsv found: test.tsv, "):
        load_beir(root, split="dev")


def test_candidates_jsonl_and_trec_run(tmp_path: Path) -> None:
    root = make_beir(tmp_path / "set")
    _jsonl(root / "candidates.jsonl", [{"query_id": "q1", "doc_ids": ["d2", "d1"]}, {"query_id": "q2", "doc_ids": []}])
    assert load_beir(root).candidates == {"q1": ["d2", "d1"], "q2": []}
    run = tmp_path / "bm25.trec"
    run.write_text("q1 Q0 d1 2 1.5 bm25\nq1 Q0 3 1 7.25 bm25\nq1 Q0 d2 3 1.5 bm25\nq2 Q0 d2 1 0.1 bm25\n")
    # Best score first; equal scores keep the run's rank order.
    assert load_beir(root, candidates=run).candidates == {"q1": ["3", "d1", "d2"], "q2": ["d2"]}
    assert load_trec_run(run) == {"q1": ["3", "d1", "d2"], "q2": ["d2"]}


def test_cmteb_jsonl(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "T2Reranking.jsonl",
        [
            {"query": "苹果手机", "positive": ["iPhone 15 发布"], "negative": ["苹果是水果", "苹果树"]},
            {"query": "panda", "positive": "A bear.", "negative": []},
        ],
    )
    dataset = load_cmteb(path)
    assert dataset.name == "T2Reranking"
    assert dataset.queries == {"1": "苹果手机", "2": "panda"}
    assert dataset.documents == {"1-p0": "iPhone 15 发布", "1-n0": "苹果是水果", "1-n1": "苹果树", "2-p0": "A bear."}
    assert dataset.qrels == {"1": {"1-p0": 1, "1-n0": 0, "1-n1": 0}, "2": {"2-p0": 1}}
    assert dataset.candidates == {"1": ["1-p0", "1-n0", "1-n1"], "2": ["2-p0"]}
    assert dataset.ordered is False


def test_find_datasets_in_a_folder_of_sets(tmp_path: Path) -> None:
    make_beir(tmp_path / "b_beir")
    _jsonl(tmp_path / "a_cmteb.jsonl", [{"query": "q", "positive": ["p"], "negative": ["n"]}])
    (tmp_path / "notes.txt").write_text("ignored")
    assert [d.name for d in find_datasets(tmp_path)] == ["a_cmteb", "b_beir"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="no data set here"):
        find_datasets(tmp_path / "empty")


def test_shared_english_set_loads_as_it_is(shared_data: Path) -> None:
    (dataset,) = find_datasets(shared_data / "en_beir_dbpedia_subset")
    assert (len(dataset.queries), len(dataset.documents)) == (40, 5000)
    assert sum(len(g) for g in dataset.qrels.values()) == 3709
    assert dataset.candidates is not None
    assert sum(len(c) for c in dataset.candidates.values()) == 3684
    first = json.loads((shared_data / "en_beir_dbpedia_subset" / "corpus.jsonl").open().readline())
    assert dataset.documents[first["_id"]] == first["title"] + " " + first["text"]


def test_shared_chinese_set_loads_as_it_is(shared_data: Path) -> None:
    (dataset,) = find_datasets(shared_data / "zh_rgb_refine_a")
    assert (len(dataset.queries), len(dataset.documents)) == (150, 3740)
    assert sum(len(g) for g in dataset.qrels.values()) == 3779
    assert dataset.candidates is not None
    assert sum(len(c) for c in dataset.candidates.values()) == 3779
    # Titles are empty: the document is the text alone, with no leading space.
    assert not any(text.startswith(" ") for text in dataset.documents.values())


BAD_LINES = [
    ("corpus.jsonl", '{"_id": "d9", "text": "ok"}\n{"_id": "d10", "text": \n', 2, "not valid JSON"),
    (
        "corpus.jsonl",
        '{"_id": "d9", "text": "ok"}\n\n{"_id": "d10"}\n',
        3,
        'field "text" must be a string, it is missing',
    ),
    ("corpus.jsonl", '["d9", "text"]\n', 1, "expected a JSON object, got list"),
    ("queries.jsonl", '{"_id": "q1", "text": 5}\n', 1, 'field "text" must be a string, it is a int'),
    (
        "qrels.tsv",
        "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\thigh\n",
        3,
        "score must be an integer grade, got 'high'",
    ),
    ("qrels.tsv", "q1\td1\n", 1, "expected 3 tab-separated columns"),
    ("candidates.jsonl", '{"query_id": "q1", "doc_ids": ["d1", "nope"]}\n', 1, "document 'nope' is not in the corpus"),
    ("candidates.jsonl", '{"query_id": "q1", "doc_ids": "d1"}\n', 1, 'field "doc_ids" must be a list'),
]


@pytest.mark.parametrize(("name", "content", "line", "problem"), BAD_LINES)
def test_malformed_beir_lines_name_file_and_line(
    tmp_path: Path, name: str, content: str, line: int, problem: str
) -> None:
    root = make_beir(tmp_path / "set")
    (root / name).write_text(content, encoding="utf-8")
    with pytest.raises(DataFormatError) as caught:
        load_beir(root)
    assert caught.value.path == str(root / name)
    assert caught.value.line == line
    assert str(caught.value).startswith(f"{root / name}:{line}: {problem}")
    assert isinstance(caught.value, InputError)  # the CLI maps it to exit code 2


def test_malformed_trec_run_and_cmteb_lines(tmp_path: Path) -> None:
    root = make_beir(tmp_path / "set")
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d1 1 2.0 bm25\nq1 Q0 d2 2 bm25\n")
    with pytest.raises(DataFormatError, match=r"run.trec:2: expected 6 columns \(qid Q0 docid rank score tag\), got 5"):
        load_beir(root, candidates=run)
    run.write_text("q1 Q0 d1 1 2.0 bm25\nq1 Q0 d2 x 1.0 bm25\n")
    with pytest.raises(DataFormatError, match=r"run.trec:2: rank must be an integer and score a number"):
        load_trec_run(run)
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"query": "q", "positive": ["p"]}\n{"query": "q", "positive": [1]}\n')
    with pytest.raises(DataFormatError, match=r"c.jsonl:2: field \"positive\" must be a string or a list of strings"):
        load_cmteb(bad)
    bad.write_text('{"query": "q", "positive": [], "negative": []}\n')
    with pytest.raises(DataFormatError, match=r"c.jsonl:1: no passages"):
        load_cmteb(bad)
    bad.write_bytes(b'{"query": "q", "positive": ["p"]}\n{"query": "\xff"}\n')
    with pytest.raises(DataFormatError, match=r"c.jsonl:2: not UTF-8 text"):
        load_cmteb(bad)


def test_missing_paths_are_clear(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="no such file or folder"):
        find_datasets(tmp_path / "nowhere")
    (tmp_path / "half").mkdir()
    _jsonl(tmp_path / "half" / "corpus.jsonl", CORPUS)
    with pytest.raises(DataFormatError, match=r"no queries\.jsonl here"):
        load_beir(tmp_path / "half")
