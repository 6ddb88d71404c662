"""Composition root: model spec and options to a ready Scorer (folder, tokenizer, backend)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from crossrank.backends.registry import load_backend
from crossrank.config import CacheOptions, ModelSpec, RuntimeOptions, TruncationOptions, cache_folder
from crossrank.engine.cache import CachedScorer, open_cache
from crossrank.engine.scorer import RequestScorer, Scorer
from crossrank.engine.tokenizer import PairTokenizer
from crossrank.errors import ConfigError, UnsupportedModelError
from crossrank.models.formats import check_tokenizer_json
from crossrank.models.info import ModelInfo
from crossrank.models.resolve import resolve_model

__all__ = ["LoadedModel", "check_max_length", "load_model"]


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model ready to score, with what is known about it."""

    info: ModelInfo
    scorer: RequestScorer
    load_seconds: float


def check_max_length(truncation: TruncationOptions, info: ModelInfo) -> None:
    """Refuse a window longer than the model's position table (it would crash mid-batch)."""
    if truncation.max_length > info.max_length:
        raise ConfigError(
            f"max_length {truncation.max_length} is more than {info.path.name} reads ({info.max_length} tokens)",
            fix=f"use max_length <= {info.max_length}",
        )


def load_model(
    spec: ModelSpec,
    runtime: RuntimeOptions,
    truncation: TruncationOptions,
    backend: str,
    cache: CacheOptions | None = None,
) -> LoadedModel:
    """Resolve, check and load a model; cheap checks run before any weight is read."""
    started = time.perf_counter()
    info = resolve_model(spec)
    check_max_length(truncation, info)
    try:
        tokenizer = PairTokenizer.from_pretrained(
            info.path, trust_remote_code=spec.trust_remote_code, cache_dir=_tokenizer_cache()
        )
    except UnsupportedModelError:
        check_tokenizer_json(info.path)  # a corrupt file is named, with the download that fixes it
        raise
    runner = load_backend(
        backend,
        info.path,
        runtime=runtime,
        allow_pickle=spec.allow_pickle,
        trust_remote_code=spec.trust_remote_code,
    )
    scorer: RequestScorer = Scorer(tokenizer, runner)
    store = open_cache(cache or CacheOptions())
    if store is not None:
        scorer = CachedScorer(scorer, store, _fingerprint(spec, runner.name, runner.dtype))
    return LoadedModel(info=info, scorer=scorer, load_seconds=time.perf_counter() - started)


def _tokenizer_cache() -> Path | None:
    """Where built tokenizers are kept (next to the ONNX exports' fallback), or None without a home folder."""
    try:
        return cache_folder("tokenizers")
    except RuntimeError:
        return None


def _fingerprint(spec: ModelSpec, backend: str, dtype: str) -> str:
    """What makes two loaded models score alike: cached scores are shared exactly between equal fingerprints."""
    return json.dumps({"model": spec.name_or_path, "revision": spec.revision, "backend": backend, "dtype": dtype})
