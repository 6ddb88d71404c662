"""The options model and the fingerprint: one declaration of every option, one identity of what a score depends on.

Fast tests on the fake backend (``fake_model_dir``: the real XLM-R tokenizer and m3 config, zero weights): what
is checked is which options and files the fingerprint covers, and that every place that reuses a score (the
result cache, ``crossrank batch`` resume) refuses a score made under another fingerprint.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crossrank import (
    ChunkingOptions,
    ConfigError,
    PromptOptions,
    Reranker,
    RerankerOptions,
    RerankOptions,
    RuntimeOptions,
    TruncationOptions,
)
from crossrank.backends.fake import FakeBackend
from crossrank.batch import run
from crossrank.cli import app
from crossrank.config import CacheOptions, flat_option_names
from crossrank.engine.cache import CachedScorer, LRUScoreCache
from crossrank.settings import _DOOR_FIELDS, Settings


def test_every_flat_option_is_declared_once_and_means_the_same_everywhere() -> None:
    """Reranker's keywords, Settings' reranker fields and RerankerOptions.from_flat's names are one list."""
    keywords = [p for p in inspect.signature(Reranker.__init__).parameters if p != "self"]
    assert sorted(keywords) == sorted(flat_option_names())
    reranker_fields = set(Settings.model_fields) - _DOOR_FIELDS  # the servers' and workers' own settings
    assert reranker_fields == set(flat_option_names())
    per_call = {f.name for f in dataclasses.fields(RerankOptions)}
    assert per_call == {
        f.name for kind in (TruncationOptions, ChunkingOptions, PromptOptions) for f in dataclasses.fields(kind)
    }


def test_flat_keywords_typed_objects_and_settings_build_the_same_options(fake_model_dir: Path) -> None:
    flat = RerankerOptions.from_flat(
        model=str(fake_model_dir), backend="fake", max_length=256, aggregate="topk_mean:2", cache_size=10
    )
    typed = RerankerOptions(
        model=flat.model,
        backend="fake",
        truncation=TruncationOptions(max_length=256),
        chunking=ChunkingOptions(aggregate="topk_mean:2"),
        cache=CacheOptions(size=10),
    )
    assert flat == typed
    env = Settings(model=str(fake_model_dir), backend="fake", max_length=256, aggregate="topk_mean:2", cache_size=10)
    assert env.reranker_options() == flat
    with Reranker(str(fake_model_dir), backend="fake", max_length=256, aggregate="topk_mean:2") as by_keywords:
        by_objects = Reranker.from_pretrained(
            str(fake_model_dir),
            backend="fake",
            truncation=TruncationOptions(max_length=256),
            chunking=ChunkingOptions(aggregate="topk_mean:2"),
        )
        assert by_objects.fingerprint() == by_keywords.fingerprint()
        by_objects.close()
    with pytest.raises(ConfigError, match=r"unknown reranker option.*max_lenght"):
        RerankerOptions.from_flat(max_lenght=128)


def test_per_call_options_are_one_typed_object(fake_reranker: Reranker) -> None:
    query, documents = "panda bamboo", ["panda " * 900 + "bamboo", "a bear eats bamboo"]
    typed = fake_reranker.rerank(query, documents, options=RerankOptions(aggregate="first", max_length=128))
    flat = fake_reranker.rerank(query, documents, aggregate="first", max_length=128)
    assert typed == flat
    assert typed.usage.truncated_documents == 1 and typed.usage.total_tokens <= 2 * 128
    assert fake_reranker.fingerprint(RerankOptions(aggregate="first")) != fake_reranker.fingerprint()
    assert fake_reranker.fingerprint(RerankOptions(aggregate="first")).differences(fake_reranker.fingerprint()) == [
        "aggregate"
    ]


def _changed_in_place(folder: Path, target: Path) -> Path:
    """A copy of ``folder`` whose weights differ in their values only (same header, same size)."""
    shutil.copytree(folder, target)
    weights = target / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-64:] = bytes(64 * [0x3F])
    weights.write_bytes(bytes(data))
    return target


def test_weights_replaced_in_place_change_the_fingerprint_and_miss_the_cache(
    fake_model_dir: Path, tmp_path: Path
) -> None:
    other = _changed_in_place(fake_model_dir, tmp_path / "retrained")
    shared = LRUScoreCache(100)
    before = Reranker.from_backend(FakeBackend(), fake_model_dir)
    after = Reranker.from_backend(FakeBackend(), other)
    assert before.fingerprint().differences(after.fingerprint()) == ["model"]
    first = CachedScorer(before.scorer, shared, before._loaded.identity)
    second = CachedScorer(after.scorer, shared, after._loaded.identity)
    request = before.prepare("q", ["a document"])
    first.score([request], before.batching)
    first.score([request], before.batching)
    assert shared.stats.hits == 1
    second.score([request], after.batching)
    assert shared.stats.hits == 1 and shared.stats.misses == 2  # never read under the other fingerprint


def test_a_local_folder_shadowing_a_hub_id_is_reported(
    fake_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copytree(fake_model_dir, tmp_path / "BAAI" / "bge-reranker-v2-m3")
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="crossrank.models.resolve"):
        reranker = Reranker("BAAI/bge-reranker-v2-m3", backend="fake")
    reranker.close()
    assert "'BAAI/bge-reranker-v2-m3' is a folder in the working directory" in caplog.text
    assert str(tmp_path) not in caplog.text  # no local paths in logs


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def make_rows(count: int) -> list[dict[str, object]]:
    long = "panda bamboo forest " * 300  # read in windows, so every chunking option matters
    return [{"id": i, "query": f"panda bamboo {i}", "documents": [long, "a bear", f"row {i}"]} for i in range(count)]


class _Interrupt(Exception):
    pass


def _interrupted_run(source: Path, output: Path, options: RerankerOptions) -> None:
    """Run until the first part is committed, then stop as a killed run would."""

    def stop(done: int, total: int) -> None:
        if done:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        run(source, output, model=options, part_rows=2, progress=stop)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("aggregate", "first"),
        ("max_length", 128),
        ("query_max_length", 16),
        ("chunk_tokens", 64),
        ("overlap_tokens", 3),
        ("max_chunks_per_doc", 2),
        ("max_tokens_per_doc", 50),
        ("truncation_direction", "left"),
        ("long_query", "reject"),
        ("truncate", False),
    ],
)
def test_resume_with_a_changed_score_option_is_refused_and_names_it(
    fake_model_dir: Path, tmp_path: Path, option: str, value: object
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", make_rows(6))
    output = tmp_path / "out.jsonl"
    base = RerankerOptions.from_flat(model=str(fake_model_dir), backend="fake")
    _interrupted_run(source, output, base)
    changed = RerankerOptions.from_flat(model=str(fake_model_dir), backend="fake", **{option: value})
    with pytest.raises(ConfigError, match=rf"unfinished run started with other arguments \({option}: "):
        run(source, output, model=changed, part_rows=2)
    # The same options resume: test_cli_batch_resume_refuses_a_changed_flag_fake_backend.


def test_resume_under_other_weights_is_refused(fake_model_dir: Path, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", make_rows(6))
    output = tmp_path / "out.jsonl"
    _interrupted_run(source, output, RerankerOptions.from_flat(model=str(fake_model_dir), backend="fake"))
    other = _changed_in_place(fake_model_dir, tmp_path / "retrained")
    with pytest.raises(ConfigError, match=r"\(model: "):
        run(source, output, model=str(other), reranker_options={"backend": "fake"}, part_rows=2)


def test_cli_batch_resume_refuses_a_changed_flag_fake_backend(fake_model_dir: Path, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", make_rows(6))
    output = tmp_path / "out.jsonl"
    _interrupted_run(source, output, RerankerOptions.from_flat(model=str(fake_model_dir), backend="fake"))
    args = ["batch", str(source), str(output), "-m", str(fake_model_dir), "--backend", "fake", "--part-rows", "2"]
    refused = CliRunner().invoke(app, [*args, "--max-chunks-per-doc", "3"])
    assert refused.exit_code == 2
    assert "max_chunks_per_doc: 64 then, 3 now" in refused.output
    resumed = CliRunner().invoke(app, [*args, "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert '"resumed_parts": 1' in resumed.output


def test_cli_flags_are_validated_like_their_variables_fake_backend(fake_model_dir: Path) -> None:
    args = ["rerank", "q", "d", "-m", str(fake_model_dir), "--backend", "fake"]
    bad = CliRunner().invoke(app, [*args, "--max-length", "4"])
    assert bad.exit_code == 2
    assert "--max-length / CROSSRANK_MAX_LENGTH" in bad.output
    assert "Traceback" not in bad.output
    bad_choice = CliRunner().invoke(app, [*args, "--truncation-direction", "up"])
    assert bad_choice.exit_code == 2 and "--truncation-direction" in bad_choice.output
    good = CliRunner().invoke(app, [*args, "--aggregate", "first", "--no-truncate", "--json"])
    assert good.exit_code == 0, good.output


def test_runtime_options_reach_the_identity(fake_model_dir: Path) -> None:
    reranker = Reranker.from_pretrained(str(fake_model_dir), backend="fake", runtime=RuntimeOptions(device="cpu"))
    values = reranker.fingerprint().values
    assert values["backend"] == "fake" and values["dtype"] == "float32" and len(values["model"]) == 64
    assert {"max_length", "aggregate", "max_chunks_per_doc", "truncation_direction"} <= values.keys()
    reranker.close()
