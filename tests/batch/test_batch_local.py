"""The local engine: JSONL and Parquet round trips, bad rows.

The round trip against the reference scores runs the real English model (slow); the file handling runs on the
fake backend (``fake_reranker``, token-overlap scores)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from batch_data import make_rows, read_jsonl, write_jsonl

from crossrank import ConfigError, CrossrankError, Reranker
from crossrank.batch import run
from reference import flag_scores


def _texts(row: dict[str, object]) -> list[str]:
    docs = row["documents"] if "documents" in row else [row["document"]]
    return [d["text"] if isinstance(d, dict) else d for d in docs]  # type: ignore[union-attr]


@pytest.mark.slow
def test_jsonl_round_trip_matches_rerank_and_the_reference(
    tmp_path: Path, english_reranker: Reranker, english_model_dir: Path
) -> None:
    rows = make_rows(23)
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    seen: list[tuple[int, int]] = []
    report = run(
        source, tmp_path / "out.jsonl", model=english_reranker, part_rows=4, progress=lambda d, t: seen.append((d, t))
    )
    out = read_jsonl(tmp_path / "out.jsonl")

    assert (report.rows, report.bad_rows, report.parts, report.resumed_parts) == (23, 0, 6, 0)
    assert report.pairs == sum(len(_texts(r)) for r in rows)
    assert seen[0] == (0, 23) and seen[-1] == (23, 23) and len(seen) == 7
    assert (tmp_path / "out.errors.jsonl").read_text() == ""
    assert not (tmp_path / "out.jsonl.parts").exists()
    assert [r["id"] for r in out] == [str(r["id"]) for r in rows]
    for row, got in zip(rows, out, strict=True):
        texts = _texts(row)
        expected = english_reranker.rerank(str(row["query"]), texts, return_documents=False).results
        by_index = sorted(expected, key=lambda d: d.index)
        assert [r["index"] for r in got["results"]] == list(range(len(texts)))
        assert [r["score"] for r in got["results"]] == pytest.approx([d.score for d in by_index], abs=1e-5)
        assert [r["relevance_score"] for r in got["results"]] == pytest.approx(
            [d.relevance_score for d in by_index], abs=1e-6
        )
        ranks = {d.index: place for place, d in enumerate(expected, start=1)}
        assert [r["rank"] for r in got["results"]] == [ranks[i] for i in range(len(texts))]
    # Independent reference: transformers, one pair at a time, no padding.
    first = rows[0]
    reference = flag_scores(english_model_dir, [(str(first["query"]), t) for t in _texts(first)], 512)
    assert [r["score"] for r in out[0]["results"]] == pytest.approx(reference, abs=1e-4)


def test_parquet_round_trip_equals_jsonl_fake_backend(tmp_path: Path, fake_reranker: Reranker) -> None:
    pa = pytest.importorskip("pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")
    rows = make_rows(17)
    table_rows = [
        {
            "id": str(r["id"]),
            "query": r["query"],
            "documents": [{"text": t} for t in _texts(r)] if "documents" in r else None,
            "document": r.get("document"),
        }
        for r in rows
    ]
    parquet.write_table(pa.Table.from_pylist(table_rows), tmp_path / "in.parquet", row_group_size=5)
    write_jsonl(tmp_path / "in.jsonl", rows)

    run(tmp_path / "in.jsonl", tmp_path / "out.jsonl", model=fake_reranker, part_rows=3)
    report = run(tmp_path / "in.parquet", tmp_path / "out.parquet", model=fake_reranker, part_rows=3)

    assert (report.rows, report.bad_rows) == (17, 0)
    table = parquet.read_table(tmp_path / "out.parquet")
    assert table.schema.field("results").type.value_type.names == ["index", "score", "relevance_score", "rank"]
    assert table.to_pylist() == read_jsonl(tmp_path / "out.jsonl")


def test_bad_rows_go_to_the_errors_file_and_the_run_goes_on_fake_backend(
    tmp_path: Path, fake_reranker: Reranker
) -> None:
    good = make_rows(6)
    lines: list[object] = [
        good[0],
        "{broken json",
        good[1],
        "",
        {"id": "no-query", "documents": ["x"]},
        good[2],
        {"id": "bad-doc", "query": "q", "documents": ["x", 42]},
        "[1, 2, 3]",
        *good[3:],
    ]
    source = write_jsonl(tmp_path / "in.jsonl", lines)
    errors = tmp_path / "bad.jsonl"
    report = run(source, tmp_path / "out.jsonl", model=fake_reranker, errors=errors, part_rows=4)

    assert (report.rows, report.bad_rows) == (6, 4)
    assert [r["id"] for r in read_jsonl(tmp_path / "out.jsonl")] == [str(r["id"]) for r in good]
    bad = read_jsonl(errors)
    assert [(b["line"], b["id"]) for b in bad] == [(2, None), (5, "no-query"), (7, "bad-doc"), (8, None)]
    assert "invalid JSON" in bad[0]["reason"]
    assert bad[1]["reason"] == 'missing field "query"'
    assert '"documents"[1]' in bad[2]["reason"]
    assert "JSON object" in bad[3]["reason"]


def test_existing_output_is_refused_fake_backend(tmp_path: Path, fake_reranker: Reranker) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", make_rows(2))
    (tmp_path / "out.jsonl").write_text("keep me\n")
    with pytest.raises(ConfigError, match="already exists"):
        run(source, tmp_path / "out.jsonl", model=fake_reranker)
    assert (tmp_path / "out.jsonl").read_text() == "keep me\n"


@pytest.mark.parametrize("how", ["same path", "symlink", "hard link", "relative path"])
def test_an_output_that_is_the_input_is_refused_even_with_overwrite(
    tmp_path: Path, fake_reranker: Reranker, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", make_rows(3))
    before = source.read_bytes()
    output: Path = source
    if how == "symlink":
        output = tmp_path / "out.jsonl"
        output.symlink_to(source)
    elif how == "hard link":
        output = tmp_path / "out.jsonl"
        output.hardlink_to(source)
    elif how == "relative path":
        monkeypatch.chdir(tmp_path)
        output = Path("sub/../in.jsonl")
        (tmp_path / "sub").mkdir()
    with pytest.raises(ConfigError, match="is the input file") as caught:
        run(source, output, model=fake_reranker, overwrite=True)
    assert caught.value.fix is not None and "another output" in caught.value.fix
    assert source.read_bytes() == before
    assert not (tmp_path / f"{output.name}.parts").exists()


def test_an_errors_file_that_is_the_input_through_a_link_is_refused(tmp_path: Path, fake_reranker: Reranker) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", make_rows(3))
    before = source.read_bytes()
    (tmp_path / "bad.jsonl").symlink_to(source)
    with pytest.raises(ConfigError, match="errors file"):
        run(source, tmp_path / "out.jsonl", model=fake_reranker, errors=tmp_path / "bad.jsonl", overwrite=True)
    assert source.read_bytes() == before
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_symlinks_planted_at_temporary_names_are_not_followed(
    tmp_path: Path, fake_reranker: Reranker, suffix: str
) -> None:
    if suffix == "parquet":
        pytest.importorskip("pyarrow.parquet")
    source = write_jsonl(tmp_path / "in.jsonl", make_rows(5))
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    output = tmp_path / f"out.{suffix}"
    parts = tmp_path / f"out.{suffix}.parts"
    parts.mkdir()
    planted = [
        tmp_path / f"out.{suffix}.tmp",
        tmp_path / "out.errors.jsonl.tmp",
        parts / "state.json.tmp",
        parts / "part-000000.jsonl.tmp",
        parts / "errors-000000.jsonl.tmp",
    ]
    for link in planted:
        link.symlink_to(victim)

    report = run(source, output, model=fake_reranker, part_rows=2)

    assert victim.read_text() == "precious\n"
    assert report.rows == 5 and output.is_file() and not output.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == sorted(
        p.name for p in planted if p.parent == tmp_path
    )
    assert (output.stat().st_mode & 0o777) == (victim.stat().st_mode & 0o777)  # the umask's mode, not mkstemp's


def test_a_second_run_on_the_same_output_is_refused_with_the_first_ones_pid(
    tmp_path: Path, fake_reranker: Reranker
) -> None:
    from crossrank.batch.parts import WorkDir

    source = write_jsonl(tmp_path / "in.jsonl", make_rows(3))
    with WorkDir(tmp_path / "out.jsonl"):  # the first run, holding the lock
        with pytest.raises(ConfigError, match=rf"another batch run \(pid {os.getpid()}\)"):
            run(source, tmp_path / "out.jsonl", model=fake_reranker)
        assert not (tmp_path / "out.jsonl").exists()
    assert run(source, tmp_path / "out.jsonl", model=fake_reranker).rows == 3
    assert not (tmp_path / "out.jsonl.parts").exists()


def test_a_run_that_fails_before_starting_leaves_no_work_folder_and_no_lock(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", make_rows(3))
    with pytest.raises(CrossrankError):
        run(source, tmp_path / "out.jsonl", model=str(tmp_path / "no-such-model"), reranker_options={"backend": "fake"})
    assert not (tmp_path / "out.jsonl.parts").exists()
