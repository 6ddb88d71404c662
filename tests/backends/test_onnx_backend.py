"""The ONNX backend: parity with the reference, int8 accuracy, the export cache and its failures.

Every model is copied to a temporary folder first: the export is written next to the model, and
../shared stays untouched.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from cases import PAIRS, judged_pairs
from conftest import build_tiny_xlmr, subprocess_env
from reference import policies_agree, st_scores
from test_reranker import KEYWORD_TRAPS

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install -e '.[onnx]'")

from crossrank import BackendError, ConfigError, Reranker
from crossrank.config import TruncationOptions
from crossrank.engine.observed import BatchStats, ObservedBackend
from crossrank.engine.scorer import ScoreRequest

pytestmark = pytest.mark.slow


def exports(model_dir: Path) -> list[Path]:
    return sorted(p for p in (model_dir / ".crossrank").glob("onnx-*") if p.is_dir())


@pytest.fixture(scope="module")
def english_copy(tmp_path_factory: pytest.TempPathFactory, english_model_dir: Path) -> Path:
    target = tmp_path_factory.mktemp("onnx") / "english"
    shutil.copytree(english_model_dir, target)
    return target


@pytest.fixture(scope="module")
def english_onnx(english_copy: Path) -> Reranker:
    return Reranker(str(english_copy), device="cpu", dtype="float32", backend="onnx")


@pytest.fixture(scope="module")
def english_int8(english_copy: Path) -> Reranker:
    return Reranker(str(english_copy), device="cpu", dtype="float32", backend="onnx", quantize="int8")


def test_fp32_equals_sentence_transformers_on_the_real_model(english_onnx: Reranker, english_copy: Path) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(english_copy)
    pairs = [p for p in PAIRS if policies_agree(hf, *p, 512)]  # where both cut long pairs alike
    assert len(pairs) >= len(PAIRS) - 2
    with Reranker(str(english_copy), device="cpu", dtype="float32", backend="onnx", aggregate="first") as rr:
        got = rr.score(pairs)
    np.testing.assert_allclose(got, st_scores(english_copy, pairs, 512), atol=1e-4, rtol=0)
    assert english_onnx.device == "cpu"
    assert english_onnx.dtype == "float32"
    assert english_onnx.scorer.backend.name == "onnx"


def test_fp32_equals_torch_on_a_tiny_xlmr(
    tmp_path: Path, xlmr_tokenizer_dir: Path, m3_config: dict[str, object]
) -> None:
    model_dir = build_tiny_xlmr(tmp_path / "tiny", xlmr_tokenizer_dir, m3_config, seed=3)
    pairs = [list(p) for p in PAIRS]
    with (
        Reranker(str(model_dir), device="cpu", dtype="float32") as torch_rr,
        Reranker(str(model_dir), backend="onnx") as onnx_rr,
    ):
        np.testing.assert_allclose(onnx_rr.compute_score(pairs), torch_rr.compute_score(pairs), atol=1e-4, rtol=0)
        # Batches of mixed lengths and sizes: no shape was frozen into the graph.
        documents = ["word " * n for n in (1, 7, 60, 300, 900)]
        want = [r.score for r in torch_rr.rerank("a query", documents).results]
        got = [r.score for r in onnx_rr.rerank("a query", documents).results]
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    manifest = json.loads((exports(model_dir)[0] / "crossrank-export.json").read_text())
    assert manifest["fused_operators"]["Attention"] == 2  # one fused attention per layer


@pytest.mark.parametrize(("query", "relevant", "trap"), KEYWORD_TRAPS)
def test_int8_keeps_the_top_1(english_int8: Reranker, query: str, relevant: str, trap: str) -> None:
    result = english_int8.rerank(query, [trap, relevant])
    assert result.results[0].index == 1
    assert english_int8.dtype == "int8"


def test_an_int8_score_does_not_depend_on_the_batch(english_int8: Reranker) -> None:
    # Dynamic int8 takes each activation tensor's scale from its whole range: batched naively, a pair's
    # score moved by tenths of a logit with its batch mates and their padding.
    pair = PAIRS[1]
    alone = english_int8.score([pair])[0]
    mates = [(pair[0], "tiny"), *PAIRS[1:], ("another query", "a much longer document " * 40)]
    for batch in ([pair, mates[0]], [*mates, pair], [pair] * 3 + mates):
        assert english_int8.score(batch)[batch.index(pair)] == pytest.approx(alone, abs=1e-6)


def test_observed_passes_count_only_the_padding_computed(english_int8: Reranker, english_onnx: Reranker) -> None:
    # int8 runs each pair alone, so the server's crossrank_padded_tokens must not count padding it never computed.
    documents = ["tiny", "a longer document " * 8]
    seen: dict[str, list[BatchStats]] = {}
    for reranker in (english_int8, english_onnx):
        passes = seen.setdefault(reranker.dtype, [])
        reranker.scorer.with_backend(ObservedBackend(reranker.scorer.backend, passes.append)).score(
            [ScoreRequest(query="what is it?", documents=documents, truncation=TruncationOptions())], reranker.batching
        )
    (int8,), (fp32,) = seen["int8"], seen["float32"]
    assert int8.tokens == fp32.tokens and int8.pairs == fp32.pairs == 2
    assert int8.padded_tokens == int8.tokens
    assert fp32.padded_tokens > fp32.tokens  # the short pair is padded to the long one's length


def test_int8_ranks_like_fp32_on_judged_data(english_int8: Reranker, english_onnx: Reranker, shared_data: Path) -> None:
    pairs = judged_pairs(shared_data / "en_beir_dbpedia_subset", queries=8, docs=25)
    assert len(pairs) >= 150
    fp32 = english_onnx.compute_score(pairs)
    int8 = english_int8.compute_score(pairs)
    assert spearmanr(int8, fp32).statistic >= 0.98


def test_export_is_reused_and_invalidated(
    tmp_path: Path, xlmr_tokenizer_dir: Path, m3_config: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    model_dir = build_tiny_xlmr(tmp_path / "tiny", xlmr_tokenizer_dir, m3_config, seed=5)
    with Reranker(str(model_dir), backend="onnx") as first:
        before = first.compute_score(["q", "a document"])
    [folder] = exports(model_dir)
    stamp = (folder / "model.onnx").stat().st_mtime_ns
    caplog.set_level(logging.INFO, logger="crossrank.backends.onnx")
    with Reranker(str(model_dir), backend="onnx") as rr:
        assert rr.compute_score(["q", "a document"]) == before
    assert "reusing the ONNX export" in caplog.text
    assert exports(model_dir) == [folder]
    assert (folder / "model.onnx").stat().st_mtime_ns == stamp

    # Other options, other export.
    Reranker(str(model_dir), backend="onnx", quantize="int8").close()
    assert len(exports(model_dir)) == 2

    # New weights (another seed, saved over the old ones): a new export with the new model's scores, and the
    # exports of the old weights (fp32 and int8), which nothing can use again, are deleted.
    build_tiny_xlmr(model_dir, xlmr_tokenizer_dir, m3_config, seed=6)
    with (
        Reranker(str(model_dir), backend="onnx") as onnx_rr,
        Reranker(str(model_dir), device="cpu", dtype="float32") as torch_rr,
    ):
        after = onnx_rr.compute_score(["q", "a document"])
        np.testing.assert_allclose(after, torch_rr.compute_score(["q", "a document"]), atol=1e-4)
        assert exports(model_dir) == [onnx_rr.scorer.backend.export_path.parent]  # type: ignore[attr-defined]
    assert after != pytest.approx(before)
    assert "made from other weights" in caplog.text


def test_exports_unused_for_30_days_are_deleted_when_another_is_made(
    tmp_path: Path, xlmr_tokenizer_dir: Path, m3_config: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    from crossrank.backends import onnx as onnx_backend

    model_dir = build_tiny_xlmr(tmp_path / "tiny", xlmr_tokenizer_dir, m3_config, seed=9)
    monkeypatch.setattr(onnx_backend, "int8_needs_7bit_weights", lambda flags, machine: False)
    Reranker(str(model_dir), backend="onnx").close()
    Reranker(str(model_dir), backend="onnx", quantize="int8").close()
    fp32, int8 = sorted(exports(model_dir), key=lambda folder: "int8" in folder.name)
    old = time.time() - 40 * 86400
    for folder in (fp32, int8):
        os.utime(folder / "crossrank-export.json", (old, old))
    Reranker(str(model_dir), backend="onnx").close()  # fp32 reused 40 days later: marked as used now
    # A CPU without VNNI wants another int8 export: making it deletes int8 (unused 40 days), keeps fp32.
    monkeypatch.setattr(onnx_backend, "int8_needs_7bit_weights", lambda flags, machine: True)
    with Reranker(str(model_dir), backend="onnx", quantize="int8") as rr:
        seven_bit = rr.scorer.backend.export_path.parent  # type: ignore[attr-defined]
    assert exports(model_dir) == sorted([fp32, seven_bit])


def test_exports_of_a_model_folder_that_is_gone_are_deleted(
    tmp_path: Path, xlmr_tokenizer_dir: Path, m3_config: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unwritable model folders export to one shared cache; there, another model's export cleans up."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    cache = tmp_path / "home" / ".cache" / "crossrank" / "onnx"
    folders = []
    for name in ("gone", "kept", "new"):
        model_dir = build_tiny_xlmr(tmp_path / name, xlmr_tokenizer_dir, m3_config, seed=len(folders))
        (model_dir / ".crossrank").write_text("a file where the export folder would go")
        if name == "new":
            shutil.rmtree(tmp_path / "gone")
        with Reranker(str(model_dir), backend="onnx") as rr:
            folders.append(rr.scorer.backend.export_path.parent)  # type: ignore[attr-defined]
    assert all(folder.parent == cache for folder in folders)
    assert sorted(cache.glob("onnx-*")) == sorted(folders[1:])


def _int8_weight_range(export: Path) -> int:
    """The largest magnitude among an int8 export's quantized weights."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(export / "model.onnx")).graph
    weights = [numpy_helper.to_array(t) for t in graph.initializer if t.name.endswith("_quantized")]
    return max(int(np.abs(w.astype(np.int32)).max()) for w in weights if w.dtype == np.int8)


def test_int8_weights_keep_to_7_bits_where_the_cpu_kernels_saturate_fake_cpu(
    tmp_path: Path, xlmr_tokenizer_dir: Path, m3_config: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    from crossrank.backends import onnx as onnx_backend

    model_dir = build_tiny_xlmr(tmp_path / "tiny", xlmr_tokenizer_dir, m3_config, seed=8)
    for seven_bit in (True, False):  # a CPU without VNNI, then one with it: each gets its own export
        monkeypatch.setattr(onnx_backend, "int8_needs_7bit_weights", lambda flags, machine, v=seven_bit: v)
        with Reranker(str(model_dir), backend="onnx", quantize="int8") as rr:
            assert rr.rerank("what is panda?", ["a bear from China", "hi"]).results
    seven, eight = sorted(exports(model_dir), key=lambda folder: "7bit" not in folder.name)
    for folder, scheme in ((seven, "int8-7bit"), (eight, "int8")):
        assert folder.name.startswith(f"onnx-{scheme}-")
        assert json.loads((folder / "crossrank-export.json").read_text())["quantize"] == scheme
    assert _int8_weight_range(seven) <= 64
    assert _int8_weight_range(eight) > 64


def test_a_damaged_export_is_made_again(tmp_path: Path, xlmr_tokenizer_dir: Path, m3_config: dict[str, object]) -> None:
    model_dir = build_tiny_xlmr(tmp_path / "tiny", xlmr_tokenizer_dir, m3_config)
    with Reranker(str(model_dir), backend="onnx") as rr:
        want = rr.compute_score(["q", "a document"])
    [folder] = exports(model_dir)
    (folder / "model.onnx").write_bytes(b"not an onnx graph")
    with Reranker(str(model_dir), backend="onnx") as rr:
        assert rr.compute_score(["q", "a document"]) == pytest.approx(want, abs=1e-6)
    assert (folder / "model.onnx").stat().st_size > 1000


def test_an_export_whose_files_differ_from_its_manifest_is_made_again(
    tmp_path: Path, xlmr_tokenizer_dir: Path, m3_config: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    """A graph that loads but is not the one exported (another model's, same size) or a truncated copy is caught
    by the manifest's sizes and hashes; before they were recorded, the wrong graph's scores came back."""
    model_dir = build_tiny_xlmr(tmp_path / "tiny", xlmr_tokenizer_dir, m3_config, seed=11)
    other_dir = build_tiny_xlmr(tmp_path / "other", xlmr_tokenizer_dir, m3_config, seed=12)
    with Reranker(str(model_dir), backend="onnx") as rr:
        want = rr.compute_score(["q", "a document"])
    Reranker(str(other_dir), backend="onnx").close()
    [folder], [other] = exports(model_dir), exports(other_dir)
    manifest = json.loads((folder / "crossrank-export.json").read_text())
    assert manifest["files"]["model.onnx"]["size"] == (folder / "model.onnx").stat().st_size
    assert (other / "model.onnx").stat().st_size == (folder / "model.onnx").stat().st_size  # only the hash differs
    caplog.set_level(logging.INFO, logger="crossrank.backends.onnx")

    shutil.copyfile(other / "model.onnx", folder / "model.onnx")
    with Reranker(str(model_dir), backend="onnx") as rr:
        assert rr.compute_score(["q", "a document"]) == pytest.approx(want, abs=1e-6)
    assert "content differs from the hash in the manifest; exporting the model again" in caplog.text

    with (folder / "model.onnx").open("ab") as handle:
        handle.write(b"\0" * 16)  # a file of another size (a copy gone wrong)
    with Reranker(str(model_dir), backend="onnx") as rr:
        assert rr.compute_score(["q", "a document"]) == pytest.approx(want, abs=1e-6)
    assert "bytes where the manifest says" in caplog.text

    # An export from before the manifest recorded its files is not trusted either.
    recorded = json.loads((folder / "crossrank-export.json").read_text())
    del recorded["files"]
    (folder / "crossrank-export.json").write_text(json.dumps(recorded))
    caplog.clear()
    Reranker(str(model_dir), backend="onnx").close()
    assert "records no file sizes and hashes" in caplog.text
    assert "files" in json.loads((folder / "crossrank-export.json").read_text())
    caplog.clear()
    Reranker(str(model_dir), backend="onnx").close()
    assert "reusing the ONNX export" in caplog.text


def test_unwritable_model_folder_exports_to_the_user_cache(
    tmp_path: Path, xlmr_tokenizer_dir: Path, m3_config: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = build_tiny_xlmr(tmp_path / "tiny", xlmr_tokenizer_dir, m3_config)
    (model_dir / ".crossrank").write_text("a file where the export folder would go")  # works even as root
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    with Reranker(str(model_dir), backend="onnx") as rr:
        path = rr.scorer.backend.export_path  # type: ignore[attr-defined]
        assert path.is_relative_to(tmp_path / "home" / ".cache" / "crossrank" / "onnx")
        assert rr.compute_score(["q", "d"]) is not None


def test_a_reused_export_scores_without_torch(english_onnx: Reranker, english_copy: Path) -> None:
    """A process that finds the export (and the tokenizer transformers built) never imports torch or transformers."""
    pairs = [["what is panda?", "The giant panda is a bear."], ["what is panda?", "hi"]]
    script = f"""
import json, sys
from crossrank import Reranker
with Reranker({str(english_copy)!r}, device="cpu", dtype="float32", backend="onnx") as rr:
    scores = rr.compute_score({pairs!r})
print(json.dumps({{"imported": [m for m in ("torch", "transformers") if m in sys.modules], "scores": scores}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=subprocess_env(), timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout.splitlines()[-1])
    assert answer["imported"] == []
    np.testing.assert_allclose(answer["scores"], english_onnx.compute_score(pairs), atol=1e-5, rtol=0)


def test_disk_full_while_exporting_is_a_clear_error(tmp_path: Path, english_model_dir: Path) -> None:
    model_dir = tmp_path / "english"
    shutil.copytree(english_model_dir, model_dir)
    # A 2 MB file-size limit makes every write past it fail as on a full disk (EFBIG instead of ENOSPC).
    script = f"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))
from crossrank import Reranker, BackendError
try:
    Reranker({str(model_dir)!r}, device="cpu", backend="onnx")
except BackendError as error:
    print("ERROR", error)
    sys.exit(0)
sys.exit("no error raised")
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=subprocess_env(), timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "could not write the ONNX export" in out.stdout
    assert "free disk space" in out.stdout
    assert not any((model_dir / ".crossrank").iterdir())  # the half-written export is gone
    # With room again, the same folder exports and scores.
    with Reranker(str(model_dir), device="cpu", dtype="float32", backend="onnx") as rr:
        assert len(rr.compute_score([["q", "d"], ["q", "e"]])) == 2


def test_a_tracer_failure_is_a_backend_error_naming_versions_fake_tracer(
    tiny_xlmr_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """transformers 5.5.x fails inside torch's tracer with an IndexError; a fake tracer raises the same here, in the
    process where the export runs (``onnx_export.ExportSteps``), and the error comes back typed."""
    from crossrank.backends import onnx_export

    wrapper = tmp_path / "fake_tracer.py"
    wrapper.write_text(
        "import sys, torch\n"
        "def tracer_bug(*args, **kwargs):\n"
        "    raise IndexError('tuple index out of range')\n"
        "torch.onnx.export = tracer_bug\n"
        "from crossrank.backends.onnx_export import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    monkeypatch.setattr(onnx_export, "_worker_command", lambda: [sys.executable, str(wrapper)])
    model_dir = tmp_path / "tiny"
    shutil.copytree(tiny_xlmr_dir, model_dir)
    with pytest.raises(BackendError, match=r"failed under torch .* and transformers .*IndexError") as caught:
        Reranker(str(model_dir), device="cpu", backend="onnx")
    assert "pip install -U transformers" in str(caught.value)
    assert "backend='torch'" in str(caught.value)
    assert exports(model_dir) == []  # nothing half-written is left to be reused


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backend": "onnx", "dtype": "float16"}, "backend='onnx' runs float32 or int8"),
        ({"backend": "torch", "quantize": "int8"}, "quantize='int8' needs backend='onnx'"),
        ({"backend": "onnx", "quantize": "int4"}, "quantize 'int4' is not one of none, int8"),
        ({"backend": "tensorrt"}, "unknown backend 'tensorrt'"),
    ],
)
def test_bad_backend_options(tiny_xlmr_dir: Path, options: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Reranker(str(tiny_xlmr_dir), device="cpu", **options)  # type: ignore[arg-type]


@pytest.mark.skipif(
    "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers(), reason="onnxruntime-gpu present"
)
def test_cuda_without_the_gpu_runtime_says_what_to_install(tiny_xlmr_dir: Path) -> None:
    with pytest.raises(ConfigError, match="pip install onnxruntime-gpu"):
        Reranker(str(tiny_xlmr_dir), device="cuda", backend="onnx")


def test_cli_rerank_with_onnx_int8(english_copy: Path, english_int8: Reranker) -> None:
    documents = ["Apples are a healthy fruit", "The new iPhone costs 999 dollars"]
    flags = ["-m", str(english_copy), "--backend", "onnx", "--quantize", "int8", "--json"]
    out = subprocess.run(
        [sys.executable, "-m", "crossrank", "rerank", "apple iphone price", *documents, *flags],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)["results"]
    want = english_int8.rerank("apple iphone price", documents).results
    assert [r["index"] for r in results] == [r.index for r in want] == [1, 0]
    assert results[0]["score"] == pytest.approx(want[0].score, abs=1e-5)
