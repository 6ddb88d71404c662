"""Shared fixtures: the models in ../shared (skipped with a reason when absent) and tiny random models."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crossrank import Reranker
from crossrank.engine.scorer import Scorer
from crossrank.engine.tokenizer import PairTokenizer

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MODELS = SHARED / "models"
DATA = SHARED / "data"

# Under pytest-xdist (tests/run.py) the workers share the CPUs: each worker, and the processes it starts, gets its
# share of torch threads: oversubscribed, torch's threads wait for each other at every operation. Set before anything
# imports torch, which reads it once.
if workers := os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(workers))))


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a child Python that must import this checkout's crossrank.

    CLI and server children score in float32 (CROSSRANK_DTYPE, read by their Settings), as the in-process fixtures
    do: where ``auto`` measured bfloat16 or int8 fastest, scores differ from the float32 references beyond the tests'
    1e-4. A child that builds a ``Reranker`` itself passes ``dtype="float32"``: the library reads no environment.
    """
    paths = [str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "CROSSRANK_DTYPE": "float32", "PYTHONPATH": os.pathsep.join(paths), **extra}


def _shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs {path} (the shared models/data folder beside the repository is missing)")
    return path


@pytest.fixture(scope="session", autouse=True)
def cpu_mode_decisions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """dtype="auto" on CPU runs float32 in tests, which compare scores with float32 references: the accuracy gate
    is closed for every family (tests/backends/test_cpu_*.py open it again), and decisions go to a temporary
    folder, not ~/.cache."""
    from crossrank.backends import cpu_mode

    folder = tmp_path_factory.mktemp("cpu-precision")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cpu_mode, "decision_folder", lambda: folder)
        for family in cpu_mode.GATED_MODES:
            patch.setitem(cpu_mode.GATED_MODES, family, frozenset())
        yield folder


@pytest.fixture(scope="session")
def english_model_dir() -> Path:
    """The real trained English cross-encoder (BERT, 6 layers) from ../shared/models."""
    return _shared(MODELS / "minilm-l6-distilled-reranker-en")


@pytest.fixture(scope="session")
def xlmr_tokenizer_dir() -> Path:
    """The real XLM-R tokenizer that bge-reranker-v2-m3 uses."""
    return _shared(MODELS / "xlm-roberta-tokenizer")


@pytest.fixture(scope="session")
def m3_config() -> dict[str, object]:
    """bge-reranker-v2-m3's exact config.json."""
    config: dict[str, object] = json.loads((_shared(MODELS / "bge-reranker-v2-m3-config") / "config.json").read_text())
    return config


def build_tiny_xlmr(target: Path, tokenizer_dir: Path, m3_config: dict[str, object], *, seed: int = 0) -> Path:
    """Save a randomly initialised XLMRobertaForSequenceClassification (2 layers, hidden 32) with the real tokenizer."""
    from crossrank.backends.synthetic import build_random_model

    shrunk = {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64}
    return build_random_model(target, tokenizer_dir, {**m3_config, **shrunk}, seed=seed)


def m3_width_encoder(max_positions: int) -> tuple[dict[str, int], Any, Any]:
    """Two random layers of bge-reranker-v2-m3's width (vocabulary cut to 1,000), for activation-memory checks.

    Returns the sizes the memory estimate reads, the model, and a function of ``(rows, length, device)``
    giving token ids and an attention mask whose first row is half padding (so the mask is built as in a
    real batch).
    """
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    sizes = {"hidden_size": 1024, "intermediate_size": 4096, "max_position_embeddings": max_positions}
    torch.manual_seed(0)
    model = XLMRobertaForSequenceClassification(
        XLMRobertaConfig(**sizes, vocab_size=1000, num_attention_heads=16, num_hidden_layers=2, num_labels=1)
    ).eval()

    def inputs(rows: int, length: int, device: str = "cpu") -> tuple[Any, Any]:
        ids = torch.randint(5, 900, (rows, length), device=device)
        mask = torch.ones_like(ids)
        mask[0, length // 2 :] = 0
        return ids, mask

    return sizes, model, inputs


@pytest.fixture(scope="session")
def tiny_xlmr_dir(
    tmp_path_factory: pytest.TempPathFactory, xlmr_tokenizer_dir: Path, m3_config: dict[str, object]
) -> Path:
    """A tiny random XLM-R cross-encoder with bge-reranker-v2-m3's tokenizer and config (shrunk)."""
    return build_tiny_xlmr(tmp_path_factory.mktemp("tiny-xlmr"), xlmr_tokenizer_dir, m3_config)


def write_fake_model(target: Path, tokenizer_dir: Path, m3_config: dict[str, object]) -> Path:
    """A model folder the loader accepts, written without torch, for ``backend="fake"``.

    bge-reranker-v2-m3's config shrunk as in ``build_tiny_xlmr``, the real XLM-R tokenizer, and zero weights
    with the names and shapes of an XLMRobertaForSequenceClassification (the loader checks the headers).
    """
    import numpy as np
    from safetensors.numpy import save_file

    hidden, inner, layers = 32, 64, 2
    config = {**m3_config, "num_hidden_layers": layers, "hidden_size": hidden, "num_attention_heads": 4}
    config["intermediate_size"] = inner
    shapes: dict[str, tuple[int, ...]] = {
        "roberta.embeddings.word_embeddings.weight": (int(str(m3_config["vocab_size"])), hidden),
        "roberta.embeddings.position_embeddings.weight": (int(str(m3_config["max_position_embeddings"])), hidden),
        "roberta.embeddings.token_type_embeddings.weight": (1, hidden),
        "roberta.embeddings.LayerNorm.weight": (hidden,),
        "roberta.embeddings.LayerNorm.bias": (hidden,),
        "classifier.dense.weight": (hidden, hidden),
        "classifier.dense.bias": (hidden,),
        "classifier.out_proj.weight": (1, hidden),
        "classifier.out_proj.bias": (1,),
    }
    for layer in range(layers):
        prefix = f"roberta.encoder.layer.{layer}"
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            shapes[f"{prefix}.{name}.weight"], shapes[f"{prefix}.{name}.bias"] = (hidden, hidden), (hidden,)
        shapes[f"{prefix}.intermediate.dense.weight"], shapes[f"{prefix}.intermediate.dense.bias"] = (
            (inner, hidden),
            (inner,),
        )
        shapes[f"{prefix}.output.dense.weight"], shapes[f"{prefix}.output.dense.bias"] = (hidden, inner), (hidden,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[f"{prefix}.{norm}.weight"], shapes[f"{prefix}.{norm}.bias"] = (hidden,), (hidden,)
    target.mkdir(parents=True, exist_ok=True)
    save_file({name: np.zeros(shape, dtype=np.float32) for name, shape in shapes.items()}, target / "model.safetensors")
    (target / "config.json").write_text(json.dumps(config))
    for item in tokenizer_dir.iterdir():
        if item.is_file():
            shutil.copy(item, target / item.name)
    return target


@pytest.fixture(scope="session")
def fake_model_dir(
    tmp_path_factory: pytest.TempPathFactory, xlmr_tokenizer_dir: Path, m3_config: dict[str, object]
) -> Path:
    """A tiny bge-reranker-v2-m3-shaped folder (real tokenizer, zero weights) for ``backend="fake"``."""
    return write_fake_model(tmp_path_factory.mktemp("fake-model"), xlmr_tokenizer_dir, m3_config)


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen3-Reranker-shaped decoder reranker (tests/decoders.py), read-only to tests."""
    from decoders import build_tiny_qwen3

    return build_tiny_qwen3(tmp_path_factory.mktemp("decoder") / "Qwen3-Reranker-tiny")


@pytest.fixture(scope="session")
def qwen3_reranker(tiny_qwen3_dir: Path) -> Iterator[Reranker]:
    """The library's reranker on the tiny Qwen3 model (float32): the scores every door must give."""
    with Reranker(str(tiny_qwen3_dir), device="cpu", dtype="float32") as reranker:
        reranker.rerank("warm-up", ["warm-up"])  # the first forward pass pays for torch's lazy set-up
        yield reranker


@pytest.fixture(scope="session")
def fake_reranker(fake_model_dir: Path) -> Iterator[Reranker]:
    """The shared ``Reranker`` on the fake backend (token-overlap scores, no model): don't reconfigure it."""
    with Reranker(str(fake_model_dir), backend="fake") as reranker:
        yield reranker


@pytest.fixture(scope="session")
def xlmr_pair_tokenizer(fake_reranker: Reranker) -> PairTokenizer:
    """bge-reranker-v2-m3's tokenizer as crossrank loads it, shared: each load reads a 17 MB file."""
    scorer = fake_reranker.scorer
    assert isinstance(scorer, Scorer)
    return scorer.tokenizer


@pytest.fixture(scope="session")
def english_reranker(english_model_dir: Path) -> Iterator[Reranker]:
    with Reranker(str(english_model_dir), device="cpu", dtype="float32") as reranker:
        yield reranker


@pytest.fixture(scope="session")
def tiny_reranker(tiny_xlmr_dir: Path) -> Iterator[Reranker]:
    with Reranker(str(tiny_xlmr_dir), device="cpu", dtype="float32") as reranker:
        yield reranker


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data: the English BEIR-dbpedia subset and the Chinese RGB set (see its PROVENANCE.md)."""
    for name in ("en_beir_dbpedia_subset", "zh_rgb_refine_a"):
        _shared(DATA / name)
    return DATA


# Keys of `strict_server`: two from flags, one from CROSSRANK_API_KEY.
STRICT_KEYS = ("key-one", "key-two", "key-three")


@pytest.fixture(scope="session")
def open_server(english_model_dir: Path) -> Iterator[object]:
    """The real server on the English model: no auth, default limits, every rerank counted as slow."""
    from server_process import running_server

    args = ["-m", str(english_model_dir), "--device", "cpu", "--max-wait-ms", "20", "--slow-ms", "0"]
    with running_server([*args, "--served-model-name", "minilm"]) as server:
        yield server


@pytest.fixture(scope="session")
def strict_server(english_model_dir: Path) -> Iterator[object]:
    """The real server with API keys, CORS for http://app.example and small limits (100 documents or pairs, 1000
    chars, 60 kB)."""
    from server_process import running_server

    args = ["-m", str(english_model_dir), "--device", "cpu", "--api-key", STRICT_KEYS[0], "--api-key", STRICT_KEYS[1]]
    limits = ["--max-queue-pairs", "100", "--max-documents", "100", "--max-document-chars", "1000"]
    limits += ["--max-query-chars", "50", "--max-body-bytes", "60000", "--cors-origins", "http://app.example"]
    env = {"CROSSRANK_API_KEY": STRICT_KEYS[2]}
    with running_server([*args, *limits], env, api_key=STRICT_KEYS[0]) as server:
        yield server
