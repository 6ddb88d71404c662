"""Evaluation data sets from disk: BEIR folders and C-MTEB reranking JSONL, checked line by line.

Every malformed line raises :class:`~crossrank.errors.DataFormatError` naming the file and the line,
so a broken download is reported as "corpus.jsonl:1234: ..." instead of a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossrank.errors import DataFormatError

__all__ = ["Dataset", "find_datasets", "load_beir", "load_cmteb", "load_trec_run"]

_LAYOUTS = (
    "a BEIR folder (corpus.jsonl, queries.jsonl, qrels.tsv or qrels/<split>.tsv, optional candidates.jsonl) "
    'or a C-MTEB reranking .jsonl file ({"query": ..., "positive": [...], "negative": [...]} per line)'
)


@dataclass(frozen=True, slots=True)
class Dataset:
    """Queries, documents and relevance grades of one data set, ready to evaluate.

    Attributes:
        name: short name used in reports (folder or file stem).
        path: where it was read from.
        queries: query id -> text, in file order.
        documents: document id -> text (``title + " " + text`` when the title is not empty).
        qrels: query id -> {document id: grade}; grade 0 is judged non-relevant.
        candidates: query id -> first-stage candidate ids, or ``None`` to retrieve with BM25.
        ordered: whether ``candidates`` are in first-stage order (``False``: an unordered pool that BM25 orders).
    """

    name: str
    path: str
    queries: dict[str, str]
    documents: dict[str, str]
    qrels: dict[str, dict[str, int]]
    candidates: dict[str, list[str]] | None = None
    ordered: bool = True


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers; undecodable bytes name the line they are on."""
    try:
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    raise DataFormatError(str(path), number, f"not UTF-8 text ({exc.reason})") from None
                if line.strip():
                    yield number, line.rstrip("\r\n")
    except OSError as exc:
        raise DataFormatError(str(path), None, f"cannot read the file ({exc.strerror})") from None


def _json_objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in _lines(path):
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(str(path), number, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(value, dict):
            raise DataFormatError(str(path), number, f"expected a JSON object, got {type(value).__name__}")
        yield number, value


def _field(path: Path, number: int, value: dict[str, Any], key: str, *, ids: bool = False) -> str:
    item = value.get(key)
    # BEIR ids are strings, but some exports write numeric ids; text must be a string.
    if ids and isinstance(item, int) and not isinstance(item, bool):
        return str(item)
    if not isinstance(item, str):
        got = "missing" if key not in value else f"a {type(item).__name__}"
        raise DataFormatError(str(path), number, f'field "{key}" must be a string, it is {got}')
    return item


def _read_corpus(path: Path) -> dict[str, str]:
    documents: dict[str, str] = {}
    for number, value in _json_objects(path):
        doc_id = _field(path, number, value, "_id", ids=True)
        text = _field(path, number, value, "text")
        title = _field(path, number, value, "title") if value.get("title") is not None else ""
        # What the cross-encoders were trained on (and what PROVENANCE's numbers use): title, space, text.
        documents[doc_id] = f"{title} {text}" if title else text
    return documents


def _read_queries(path: Path) -> dict[str, str]:
    return {
        _field(path, number, value, "_id", ids=True): _field(path, number, value, "text")
        for number, value in _json_objects(path)
    }


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """BEIR ``query-id<TAB>corpus-id<TAB>score`` (header optional) or TREC ``qid iter docid grade``."""
    qrels: dict[str, dict[str, int]] = {}
    for number, line in _lines(path):
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) == 4:
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3:
            raise DataFormatError(
                str(path), number, f"expected 3 tab-separated columns (query-id, corpus-id, score), got {len(parts)}"
            )
        query_id, doc_id, grade = (p.strip() for p in parts)
        try:
            value = int(grade)
        except ValueError:
            if number == 1:  # the BEIR header line
                continue
            raise DataFormatError(str(path), number, f"score must be an integer grade, got {grade!r}") from None
        qrels.setdefault(query_id, {})[doc_id] = value
    return qrels


def load_trec_run(path: Path, documents: dict[str, str] | None = None) -> dict[str, list[str]]:
    """A TREC run (``qid Q0 docid rank score tag``) as query id -> doc ids, best score first."""
    scored: dict[str, list[tuple[float, int, str]]] = {}
    for number, line in _lines(path):
        parts = line.split()
        if len(parts) != 6:
            raise DataFormatError(
                str(path), number, f"expected 6 columns (qid Q0 docid rank score tag), got {len(parts)}"
            )
        query_id, _, doc_id, rank, score, _ = parts
        try:
            key = (-float(score), int(rank), doc_id)
        except ValueError:
            raise DataFormatError(str(path), number, "rank must be an integer and score a number") from None
        if documents is not None and doc_id not in documents:
            raise DataFormatError(str(path), number, f"document {doc_id!r} is not in the corpus")
        scored.setdefault(query_id, []).append(key)
    return {q: [doc for _, _, doc in sorted(rows)] for q, rows in scored.items()}


def _read_candidates_jsonl(path: Path, documents: dict[str, str]) -> dict[str, list[str]]:
    candidates: dict[str, list[str]] = {}
    for number, value in _json_objects(path):
        query_id = _field(path, number, value, "query_id", ids=True)
        doc_ids = value.get("doc_ids")
        if not isinstance(doc_ids, list) or not all(isinstance(d, str | int) for d in doc_ids):
            raise DataFormatError(str(path), number, 'field "doc_ids" must be a list of document ids')
        for doc_id in map(str, doc_ids):
            if doc_id not in documents:
                raise DataFormatError(str(path), number, f"document {doc_id!r} is not in the corpus")
        candidates[query_id] = [str(d) for d in doc_ids]
    return candidates


def _qrels_file(folder: Path, split: str) -> Path:
    if (folder / "qrels.tsv").is_file():
        return folder / "qrels.tsv"
    qrels_dir = folder / "qrels"
    if (qrels_dir / f"{split}.tsv").is_file():
        return qrels_dir / f"{split}.tsv"
    tsvs = sorted(qrels_dir.glob("*.tsv")) if qrels_dir.is_dir() else []
    if len(tsvs) == 1:
        return tsvs[0]
    found = ", ".join(p.name for p in tsvs) or "none"
    raise DataFormatError(
        str(folder),
        None,
        f"no qrels.tsv and no qrels/{split}.tsv (qrels/*.tsv found: {found})",
        fix="add the relevance judgements, or pick the split whose qrels to use",
    )


def load_beir(folder: str | Path, *, split: str = "test", candidates: str | Path | None = None) -> Dataset:
    """A BEIR folder; candidates from ``candidates`` (JSONL or TREC run), else ``candidates.jsonl`` if present."""
    root = Path(folder)
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (root / name).is_file():
            raise DataFormatError(str(root), None, f"no {name} here", fix=f"point --data at {_LAYOUTS}")
    documents = _read_corpus(root / "corpus.jsonl")
    dataset_candidates: dict[str, list[str]] | None = None
    source = Path(candidates) if candidates is not None else root / "candidates.jsonl"
    if candidates is not None or source.is_file():
        if not source.is_file():
            raise DataFormatError(str(source), None, "no such candidates file")
        dataset_candidates = (
            _read_candidates_jsonl(source, documents) if source.suffix == ".jsonl" else load_trec_run(source, documents)
        )
    return Dataset(
        name=root.resolve().name,
        path=str(root),
        queries=_read_queries(root / "queries.jsonl"),
        documents=documents,
        qrels=_read_qrels(_qrels_file(root, split)),
        candidates=dataset_candidates,
    )


def _texts(path: Path, number: int, value: dict[str, Any], key: str) -> list[str]:
    item = value.get(key, [])
    items = [item] if isinstance(item, str) else item
    if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
        raise DataFormatError(str(path), number, f'field "{key}" must be a string or a list of strings')
    return items


def load_cmteb(file: str | Path) -> Dataset:
    """C-MTEB reranking JSONL: one ``{"query", "positive": [...], "negative": [...]}`` per line.

    Line N becomes query ``N``; its passages become documents ``N-p<i>`` (grade 1) and ``N-n<i>``
    (grade 0). Each query's passages are its candidate pool, which BM25 orders for the first stage.
    """
    path = Path(file)
    queries: dict[str, str] = {}
    documents: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for number, value in _json_objects(path):
        query_id = str(number)
        queries[query_id] = _field(path, number, value, "query")
        grades: dict[str, int] = {}
        for key, tag, grade in (("positive", "p", 1), ("negative", "n", 0)):
            for i, text in enumerate(_texts(path, number, value, key)):
                documents[f"{query_id}-{tag}{i}"] = text
                grades[f"{query_id}-{tag}{i}"] = grade
        if not grades:
            raise DataFormatError(str(path), number, 'no passages: "positive" and "negative" are both empty')
        qrels[query_id] = grades
    return Dataset(
        name=path.stem,
        path=str(path),
        queries=queries,
        documents=documents,
        qrels=qrels,
        candidates={q: list(grades) for q, grades in qrels.items()},
        ordered=False,
    )


def _is_beir(path: Path) -> bool:
    return path.is_dir() and (path / "corpus.jsonl").is_file()


def find_datasets(path: str | Path, *, split: str = "test", candidates: str | Path | None = None) -> list[Dataset]:
    """Every data set at ``path``: a BEIR folder, a C-MTEB ``.jsonl`` file, or a folder of either."""
    root = Path(path)
    if _is_beir(root):
        return [load_beir(root, split=split, candidates=candidates)]
    if root.is_file() and root.suffix == ".jsonl":
        return [load_cmteb(root)]
    if candidates is not None:
        raise DataFormatError(str(root), None, "candidates can only be given for one BEIR folder")
    if root.is_dir():
        found = [
            load_beir(child, split=split) if _is_beir(child) else load_cmteb(child)
            for child in sorted(root.iterdir())
            if _is_beir(child) or (child.is_file() and child.suffix == ".jsonl")
        ]
        if found:
            return found
    problem = "no such file or folder" if not root.exists() else "no data set here"
    raise DataFormatError(str(root), None, problem, fix=f"point --data at {_LAYOUTS}, or a folder of them")
