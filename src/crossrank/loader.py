"""Composition root: model spec and options to a ready Scorer (folder, tokenizer, backend)."""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossrank.backends.base import Backend, TokenHead
from crossrank.backends.registry import load_backend
from crossrank.config import CacheOptions, PromptOptions, RerankerOptions, TruncationOptions
from crossrank.engine.cache import CachedScorer, open_cache
from crossrank.engine.scorer import RequestScorer, Scorer
from crossrank.engine.tokenizer import PairTokenizer
from crossrank.errors import ConfigError, UnsupportedModelError
from crossrank.families import Family
from crossrank.fingerprint import Fingerprint
from crossrank.models.formats import check_tokenizer_json
from crossrank.models.identity import model_digest
from crossrank.models.info import ModelInfo, read_model_info
from crossrank.models.resolve import resolve_model, snapshot_commit
from crossrank.paths import cache_folder

_log = logging.getLogger(__name__)

__all__ = [
    "LoadedModel",
    "assemble",
    "check_max_length",
    "describe",
    "load_model",
    "load_tokenizer",
    "resolve_prompt",
]


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model ready to score, with what is known about it.

    Attributes:
        info: what was read from the model folder.
        scorer: tokenizer and backend (behind the result cache when one is configured).
        load_seconds: wall time to resolve and load.
        identity: what makes two loaded models score alike (the model's digest, hub commit, backend, precision,
            and a decoder reranker's family), the model half of the fingerprint.
    """

    info: ModelInfo
    scorer: RequestScorer
    load_seconds: float
    identity: dict[str, Any]

    @property
    def family(self) -> Family:
        """How the model is scored."""
        return self.info.family


def resolve_prompt(family: Family, prompt: PromptOptions) -> PromptOptions:
    """The instruction a request runs with: its own, else its family's default; none for a family without one
    (an instruction given to such a model is dropped, and logged once)."""
    if not family.takes_instruction:
        if prompt.instruction is not None and family.name not in _ignored_instructions:
            _ignored_instructions.add(family.name)
            _log.info("the %s family takes no instruction: ignoring the one given", family.name)
        return PromptOptions() if prompt.instruction is not None else prompt
    if prompt.instruction is None:
        return PromptOptions(instruction=family.default_instruction)
    return prompt


_ignored_instructions: set[str] = set()


def check_max_length(truncation: TruncationOptions, info: ModelInfo) -> None:
    """Refuse a window longer than the model's position table (it would crash mid-batch)."""
    if truncation.max_length > info.max_length:
        raise ConfigError(
            f"max_length {truncation.max_length} is more than {info.path.name} reads ({info.max_length} tokens)",
            fix=f"use max_length <= {info.max_length}",
        )


def load_model(options: RerankerOptions, *, backend: Backend | None = None) -> LoadedModel:
    """Resolve, check and load a model; cheap checks run before any weight is read.

    With ``backend`` (already loaded), the folder gives only the tokenizer and the model's identity.
    """
    started = time.perf_counter()
    spec = options.model
    info = resolve_model(spec)
    check_max_length(options.truncation, info)
    digest = model_digest(info.path, allow_pickle=spec.allow_pickle)
    tokenizer = _tokenizer(info.path, spec.trust_remote_code, digest, info.family)
    runner = backend or load_backend(
        options.backend,
        info.path,
        runtime=options.runtime,
        allow_pickle=spec.allow_pickle,
        trust_remote_code=spec.trust_remote_code,
        model_digest=digest,
        head=_score_head(tokenizer, spec.cutoff_layer),
    )
    loaded = assemble(info, tokenizer, runner, digest, options.cache, started=started, cutoff_layer=spec.cutoff_layer)
    _log.info(
        "loaded %s: %s backend, %s on %s, %.1f s",
        info.path.name,
        runner.name,
        runner.dtype,
        runner.device,
        loaded.load_seconds,
    )
    return loaded


def describe(options: RerankerOptions) -> Fingerprint:
    """The fingerprint of the model ``options`` describe without loading it: the model's files, and the backend
    and precision as asked for (``auto`` unresolved), with every score-changing option."""
    info = resolve_model(options.model)
    precision = "int8" if options.runtime.quantize == "int8" else options.runtime.dtype
    digest = model_digest(info.path, allow_pickle=options.model.allow_pickle)
    identity = _identity(info, digest, options.backend, precision, options.model.cutoff_layer)
    prompt = resolve_prompt(info.family, options.prompt)
    return Fingerprint.of(identity, options.truncation, options.chunking, prompt)


@functools.lru_cache(maxsize=4)
def _tokenizer(folder: Path, trust_remote_code: bool, digest: str, family: Family) -> PairTokenizer:
    """``load_tokenizer``, kept for the next load of the same files (``digest`` covers them): parsing a large
    vocabulary takes about a second, and a PairTokenizer is read-only once built, so rerankers can share one."""
    return load_tokenizer(folder, trust_remote_code=trust_remote_code, family=family)


def load_tokenizer(folder: Path, *, trust_remote_code: bool = False, family: Family | None = None) -> PairTokenizer:
    """The pair tokenizer of a model folder (for ``family``, default: the one its config.json says); a corrupt
    tokenizer file is named, with the download that fixes it."""
    if family is None:
        family = read_model_info(folder, allow_pickle=True).family
    try:
        return PairTokenizer.from_pretrained(
            folder, trust_remote_code=trust_remote_code, cache_dir=_tokenizer_cache(), family=family
        )
    except UnsupportedModelError:
        check_tokenizer_json(folder)
        raise


def assemble(
    info: ModelInfo,
    tokenizer: PairTokenizer,
    backend: Backend,
    digest: str,
    cache: CacheOptions,
    *,
    started: float,
    cutoff_layer: int | None = None,
) -> LoadedModel:
    """A ``LoadedModel`` from its parts: the scorer, behind the result cache when ``cache`` configures one."""
    identity = _identity(info, digest, backend.name, backend.dtype, cutoff_layer)
    scorer: RequestScorer = Scorer(tokenizer, backend)
    store = open_cache(cache)
    if store is not None:
        scorer = CachedScorer(scorer, store, identity)
    return LoadedModel(info=info, scorer=scorer, load_seconds=time.perf_counter() - started, identity=identity)


def _identity(
    info: ModelInfo, digest: str, backend: str, dtype: str, cutoff_layer: int | None = None
) -> dict[str, Any]:
    """The model half of a fingerprint (a cross-encoder's as before families existed; a layer-wise model's cutoff
    layer when one is chosen)."""
    identity = {"model": digest, "commit": snapshot_commit(info.path), "backend": backend, "dtype": dtype}
    if not info.family.decoder:
        return identity
    layer = {} if cutoff_layer is None else {"cutoff_layer": cutoff_layer}
    return {**identity, "family": info.family.name, **layer}


def _score_head(tokenizer: PairTokenizer, cutoff_layer: int | None) -> TokenHead | None:
    """The tokenizer's score head, read at ``cutoff_layer`` when one is chosen (a layer-wise model's; the backend
    refuses it for other decoders)."""
    head = tokenizer.head()
    if cutoff_layer is None:
        return head
    if head is None:
        raise ConfigError(
            f"cutoff_layer {cutoff_layer} is for layer-wise rerankers (bge-reranker-v2-minicpm-layerwise); "
            "this model is a cross-encoder",
            fix="leave cutoff_layer unset for this model",
        )
    return dataclasses.replace(head, layer=cutoff_layer)


def _tokenizer_cache() -> Path | None:
    """Where built tokenizers are kept (next to the ONNX exports' fallback), or None without a home folder."""
    try:
        return cache_folder("tokenizers")
    except RuntimeError:
        return None
