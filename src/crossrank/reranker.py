"""Reranker: the synchronous façade (rerank documents, score pairs, FlagReranker-compatible scoring)."""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import overload

import numpy as np
import numpy.typing as npt

from crossrank.backends.base import Backend
from crossrank.config import (
    DEFAULT_MODEL,
    BatchingOptions,
    CacheOptions,
    ChunkingOptions,
    Direction,
    Dtype,
    Fallback,
    LongQuery,
    ModelSpec,
    PromptOptions,
    Quantize,
    RerankerOptions,
    RerankOptions,
    RuntimeOptions,
    TruncationOptions,
)
from crossrank.engine.inputs import check_documents, check_pairs, check_text
from crossrank.engine.ranking import rank
from crossrank.engine.scorer import RequestScorer, ScoredRequest, ScoreRequest, sigmoid
from crossrank.errors import InputError, TruncationWarning
from crossrank.families import Family
from crossrank.fingerprint import Fingerprint
from crossrank.loader import LoadedModel, check_max_length, load_model, resolve_prompt
from crossrank.models.info import ModelInfo
from crossrank.types import RerankResult

__all__ = ["Reranker"]

_log = logging.getLogger(__name__)


_RERANK_OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(RerankOptions))


def _options(
    model: str | Path | ModelSpec,
    backend: str,
    runtime: RuntimeOptions | None,
    truncation: TruncationOptions | None,
    chunking: ChunkingOptions | None,
    batching: BatchingOptions | None,
    cache: CacheOptions | None,
    prompt: PromptOptions | None = None,
) -> RerankerOptions:
    return RerankerOptions(
        model=model if isinstance(model, ModelSpec) else ModelSpec(name_or_path=str(model)),
        backend=backend,
        runtime=runtime or RuntimeOptions(),
        truncation=truncation or TruncationOptions(),
        chunking=chunking or ChunkingOptions(),
        prompt=prompt or PromptOptions(),
        max_batch_tokens=batching.max_batch_tokens if batching else None,
        max_batch_size=batching.max_batch_size if batching else None,
        cache=cache or CacheOptions(),
    )


class Reranker:
    """Scores and orders documents for a query with a cross-encoder.

    Example:
        >>> rr = Reranker("BAAI/bge-reranker-v2-m3")            # hub id or local folder
        >>> rr.rerank("苹果手机", ["苹果是一种水果", "iPhone 15 正式发布"], top_n=1).results[0].index
        1
        >>> rr.compute_score(["what is panda?", "The giant panda is a bear."], normalize=True)
        0.99...

    Args:
        model: hub id or local folder of a one-label ``*ForSequenceClassification`` model.
        revision: hub branch, tag or commit.
        backend: runtime that executes the model: ``torch``, or ``onnx`` (onnxruntime; the export is
            made on first load and cached next to the model).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: ``auto`` (float16 on GPU; on CPU the fastest of float32, bfloat16 autocast and bfloat16 weights
            measured on this machine within the accuracy gate, or with ``backend="onnx"`` of float32 and int8,
            docs/performance/cpu-precision.md), ``float32``, ``float16`` or ``bfloat16``.
        quantize: ``int8`` runs int8 weights (``backend="onnx"``, CPU: several times faster, slightly
            different scores) without measuring; ``none`` leaves it to ``dtype``.
        max_length: tokens per (query, document) pair, special tokens included.
        query_max_length: the query's cap (default ``max_length * 3 // 4``); only documents are cut after it.
        max_batch_tokens: padded tokens per forward pass (default: 8192 on CPU; on a GPU, what the
            memory left free after loading holds, at most 32768).
        max_batch_size: pairs per forward pass (default: 64 on CPU; on a GPU, the token budget / 64, at least 64).
        num_threads: CPU threads for the runtime.
        allow_pickle: accept ``pytorch_model.bin`` weights (pickle can run code).
        trust_remote_code: run code shipped with the model.
        cache_dir: hub cache folder (default: huggingface_hub's, from ``HF_HOME``).
        fallback: ``cpu`` scores a pair on CPU when it alone does not fit in GPU memory; ``none`` raises.
        cache_size: result-cache entries kept in this process (0: no in-process cache).
        cache_bytes: memory the in-process cache may take, approximately.
        cache_url: ``redis://...`` to keep the result cache in Redis, shared between processes.
        cache_ttl: seconds a Redis cache entry lives.
        cache_prefix: prefix of the Redis keys.
        cache_timeout: seconds to wait for Redis before scoring instead.
        aggregate: how a document longer than one pair is scored: ``max`` (its best window),
            ``mean``, ``topk_mean:K`` or ``first`` (plain truncation, FlagEmbedding's behaviour).
        chunk_tokens: document tokens per window (default: all the room beside the query).
        overlap_tokens: tokens shared by neighbouring windows (default: 1/8 of the window).
        max_chunks_per_doc: windows per document at most; the rest is cut (or refused, see ``truncate``).
        max_tokens_per_doc: cut every document to this many tokens before windowing (Cohere's option).
        truncation_direction: ``right`` cuts the end of a text, ``left`` its start.
        truncate: ``False`` raises ``InputTooLongError`` instead of dropping any query or document token.
        long_query: ``truncate`` (cut a query over its cap, with a ``TruncationWarning``) or ``reject``.
        family: how the model is scored: ``auto`` (detected from its config.json and name), ``cross-encoder``,
            or a decoder reranker's family (``qwen3-reranker``, ``bge-reranker-gemma``,
            ``bge-reranker-minicpm-layerwise``, ``mxbai-rerank-v2``) for a renamed or fine-tuned checkpoint.
        cutoff_layer: a layer-wise reranker's (bge-reranker-v2-minicpm-layerwise) layer whose score head is read
            (default: its last, as FlagEmbedding); an earlier one runs fewer layers.
        instruction: a decoder reranker's task instruction (default: its family's); ignored by cross-encoders.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        revision: str | None = None,
        backend: str = "torch",
        device: str = "auto",
        dtype: Dtype = "auto",
        quantize: Quantize = "none",
        max_length: int = 512,
        query_max_length: int | None = None,
        max_batch_tokens: int | None = None,
        max_batch_size: int | None = None,
        num_threads: int | None = None,
        allow_pickle: bool = False,
        trust_remote_code: bool = False,
        cache_dir: str | None = None,
        fallback: Fallback = "none",
        cache_size: int = 0,
        cache_bytes: int = 256 * 2**20,
        cache_url: str | None = None,
        cache_ttl: int | None = None,
        cache_prefix: str = "crossrank:",
        cache_timeout: float = 0.25,
        aggregate: str = "max",
        chunk_tokens: int | None = None,
        overlap_tokens: int | None = None,
        max_chunks_per_doc: int = 64,
        max_tokens_per_doc: int | None = None,
        truncation_direction: Direction = "right",
        truncate: bool = True,
        long_query: LongQuery = "truncate",
        family: str = "auto",
        cutoff_layer: int | None = None,
        instruction: str | None = None,
    ) -> None:
        # Every argument is a flat option name (config.flat_option_names): one object holds them all.
        options = RerankerOptions.from_flat(**{k: v for k, v in locals().items() if k != "self"})
        self._open(options, load_model(options))

    @classmethod
    def from_pretrained(
        cls,
        model: str | ModelSpec = DEFAULT_MODEL,
        *,
        backend: str = "torch",
        runtime: RuntimeOptions | None = None,
        truncation: TruncationOptions | None = None,
        chunking: ChunkingOptions | None = None,
        batching: BatchingOptions | None = None,
        cache: CacheOptions | None = None,
        prompt: PromptOptions | None = None,
    ) -> Reranker:
        """Load ``model`` with typed options (each ``None``: its defaults); ``Reranker(model, **flat)`` is the same.

        Example:
            >>> Reranker.from_pretrained("BAAI/bge-reranker-v2-m3", runtime=RuntimeOptions(device="cpu"),
            ...                          chunking=ChunkingOptions(aggregate="topk_mean:2"))
        """
        return cls.from_options(_options(model, backend, runtime, truncation, chunking, batching, cache, prompt))

    @classmethod
    def from_options(cls, options: RerankerOptions) -> Reranker:
        """Load the model ``options`` describe (what ``Settings.reranker_options()`` gives)."""
        reranker = cls.__new__(cls)
        reranker._open(options, load_model(options))
        return reranker

    @classmethod
    def from_backend(
        cls,
        backend: Backend,
        model: str | Path | ModelSpec,
        *,
        truncation: TruncationOptions | None = None,
        chunking: ChunkingOptions | None = None,
        batching: BatchingOptions | None = None,
        cache: CacheOptions | None = None,
    ) -> Reranker:
        """A reranker over a backend you built (your own runtime, or ``FakeBackend`` in tests).

        ``model`` is the folder (or hub id) whose ``config.json`` and tokenizer go with ``backend``; it is
        checked and fingerprinted as ``from_pretrained`` does, but its weights are not loaded.
        """
        options = _options(model, backend.name, None, truncation, chunking, batching, cache)
        reranker = cls.__new__(cls)
        reranker._open(options, load_model(options, backend=backend))
        return reranker

    def _open(self, options: RerankerOptions, loaded: LoadedModel) -> None:
        self.options = options
        self.model = options.model.name_or_path
        self.revision = options.model.revision
        self.truncation = options.truncation
        self.chunking = options.chunking
        self.prompt = options.prompt
        self._loaded = loaded
        suggested = loaded.scorer.backend.batching
        self.batching = BatchingOptions(
            max_batch_tokens=options.max_batch_tokens or suggested.max_batch_tokens,
            max_batch_size=options.max_batch_size or suggested.max_batch_size,
            min_pass_tokens=suggested.min_pass_tokens,
        )

    @property
    def device(self) -> str:
        """Device the model runs on, e.g. ``cpu`` or ``cuda:0``."""
        return self._loaded.scorer.backend.device

    @property
    def dtype(self) -> str:
        """Precision of the model's weights, e.g. ``float32``."""
        return self._loaded.scorer.backend.dtype

    @property
    def model_max_length(self) -> int:
        """The longest pair the model can read, in tokens."""
        return self._loaded.info.max_length

    @property
    def info(self) -> ModelInfo:
        """What was read from the model folder (path, architecture, window length)."""
        return self._loaded.info

    @property
    def scorer(self) -> RequestScorer:
        """The engine's scorer (tokenizer + backend); one thread may use it at a time."""
        return self._loaded.scorer

    @property
    def load_seconds(self) -> float:
        """Wall time spent resolving and loading the model."""
        return self._loaded.load_seconds

    def unknown_fraction(self, text: str) -> float:
        """Share of ``text``'s tokens the model's vocabulary cannot represent (1.0: it cannot read it)."""
        return self._loaded.scorer.tokenizer.unknown_fraction(text)

    def fingerprint(self, options: RerankOptions | None = None) -> Fingerprint:
        """What this reranker's scores depend on besides the texts (with a call's ``options``): the model's files,
        backend, precision and every score-changing option. Equal fingerprints give equal scores; the result
        cache, ``crossrank batch`` resume and ``/info`` use it."""
        return Fingerprint.of(self._loaded.identity, *self._resolve(options or RerankOptions()))

    @property
    def family(self) -> Family:
        """How this model is scored (``crossrank.families``)."""
        return self._loaded.family

    @property
    def instruction(self) -> str | None:
        """The instruction a call without one runs with: the one this reranker was given, else its family's default
        (``None`` for a cross-encoder)."""
        return resolve_prompt(self._loaded.family, self.prompt).instruction

    def _resolve(self, options: RerankOptions) -> tuple[TruncationOptions, ChunkingOptions, PromptOptions]:
        """This reranker's options with a call's overrides, checked against the model; the instruction is the
        family's (its default when none is given, none for a family without one)."""
        truncation, chunking, prompt = options.apply(self.truncation, self.chunking, self.prompt)
        if truncation is not self.truncation:
            check_max_length(truncation, self._loaded.info)
        return truncation, chunking, resolve_prompt(self._loaded.family, prompt)

    def _warn_if_cut(self, request: ScoreRequest, scored: ScoredRequest, stacklevel: int = 3) -> None:
        if scored.usage.unreadable_texts:
            _log.warning(
                "%d of the texts are mostly tokens %s cannot read (another language?): their scores are guesses; "
                "use a model that reads it, such as BAAI/bge-reranker-v2-m3",
                scored.usage.unreadable_texts,
                self._loaded.info.path.name,
            )
        if scored.usage.truncated_queries:
            cap = self._loaded.scorer.tokenizer.query_cap(request.truncation)
            warnings.warn(
                f"the query was cut to {cap} tokens (its cap: query_max_length, default 3/4 of max_length); "
                "pass long_query='reject' to refuse such queries instead",
                TruncationWarning,
                stacklevel=stacklevel,
            )

    def _logits(
        self, pairs: object, max_length: int | None, query_max_length: int | None, batch_size: int | None
    ) -> npt.NDArray[np.float32]:
        checked = check_pairs(pairs)
        truncation, chunking, prompt = self._resolve(
            RerankOptions(max_length=max_length, query_max_length=query_max_length)
        )
        batching = self.batching
        if batch_size is not None:
            batching = dataclasses.replace(batching, max_batch_size=batch_size)
        # One request per distinct query, so each query is tokenised once.
        positions: dict[str, list[int]] = {}
        for i, (query, _) in enumerate(checked):
            positions.setdefault(query, []).append(i)
        requests = [
            ScoreRequest(
                query=query,
                documents=[checked[i][1] for i in where],
                truncation=truncation,
                chunking=chunking,
                prompt=prompt,
            )
            for query, where in positions.items()
        ]
        logits = np.empty(len(checked), dtype=np.float32)
        scored_requests = self._loaded.scorer.score(requests, batching)
        for where, request, scored in zip(positions.values(), requests, scored_requests, strict=True):
            logits[where] = scored.logits
            self._warn_if_cut(request, scored, stacklevel=4)
        return logits

    def score(
        self,
        pairs: Sequence[tuple[str, str]] | Sequence[Sequence[str]],
        *,
        max_length: int | None = None,
        query_max_length: int | None = None,
        batch_size: int | None = None,
    ) -> list[float]:
        """Raw logits of (query, document) pairs, in the caller's order (long documents per ``aggregate``)."""
        return [float(x) for x in self._logits(pairs, max_length, query_max_length, batch_size)]

    @overload
    def compute_score(  # type: ignore[overload-overlap]  # a (str, str) tuple is also a sequence of strings
        self,
        sentence_pairs: tuple[str, str],
        *,
        batch_size: int | None = ...,
        max_length: int | None = ...,
        query_max_length: int | None = ...,
        normalize: bool = ...,
    ) -> float: ...
    @overload
    def compute_score(
        self,
        sentence_pairs: Sequence[tuple[str, str]] | Sequence[Sequence[str]],
        *,
        batch_size: int | None = ...,
        max_length: int | None = ...,
        query_max_length: int | None = ...,
        normalize: bool = ...,
    ) -> list[float]: ...
    def compute_score(
        self,
        sentence_pairs: tuple[str, str] | Sequence[tuple[str, str]] | Sequence[Sequence[str]],
        *,
        batch_size: int | None = None,
        max_length: int | None = None,
        query_max_length: int | None = None,
        normalize: bool = False,
    ) -> float | list[float]:
        """FlagEmbedding ``FlagReranker.compute_score``: one pair gives a float, a list of pairs a list.

        Scores are raw logits, or ``sigmoid(logit)`` with ``normalize=True``. A document longer than
        one pair is scored per the reranker's ``aggregate`` (default ``max`` over windows); build the
        reranker with ``aggregate="first"`` for FlagEmbedding's plain truncation.
        """
        single = (
            isinstance(sentence_pairs, Sequence)
            and len(sentence_pairs) == 2
            and all(isinstance(x, str) for x in sentence_pairs)
        )
        logits = self._logits([sentence_pairs] if single else sentence_pairs, max_length, query_max_length, batch_size)
        scores = [float(x) for x in (sigmoid(logits) if normalize else logits)]
        return scores[0] if single else scores

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        return_documents: bool = True,
        min_score: float | None = None,
        use_cache: bool = True,
        options: RerankOptions | None = None,
        max_length: int | None = None,
        query_max_length: int | None = None,
        truncation_direction: Direction | None = None,
        max_tokens_per_doc: int | None = None,
        truncate: bool | None = None,
        long_query: LongQuery | None = None,
        aggregate: str | None = None,
        chunk_tokens: int | None = None,
        overlap_tokens: int | None = None,
        max_chunks_per_doc: int | None = None,
        instruction: str | None = None,
    ) -> RerankResult:
        """Order ``documents`` by relevance to ``query`` (highest first; ties keep the caller's order).

        A document that does not fit beside the query in ``max_length`` tokens is split into
        overlapping windows, each scored with the query; ``aggregate`` makes them one score and each
        result's ``span`` gives the characters of its best window (``document[span.start:span.end]``).

        The keywords after ``options`` (``max_length``, ``query_max_length``, ``truncation_direction``,
        ``max_tokens_per_doc``, ``truncate``, ``long_query``, ``aggregate``, ``chunk_tokens``, ``overlap_tokens``,
        ``max_chunks_per_doc``, ``instruction``) are the same as fields of ``options`` (they win over it); ``None``
        keeps the reranker's.

        Args:
            query: the question or search text.
            documents: candidate texts; any Unicode, empty strings allowed.
            top_n: keep only the best ``top_n`` (all when ``None``).
            return_documents: include each document's text in the result.
            min_score: drop documents whose ``relevance_score`` is below this (0 to 1).
            use_cache: ``False`` scores afresh even when a result cache is configured.
            options: this call's score-changing options (``RerankOptions``; ``None`` fields keep the reranker's).

        Raises:
            InputTooLongError: a text is over its limit and ``truncate=False`` or ``long_query='reject'``.
        """
        # The flat keywords above are RerankOptions' fields by name; those given win over ``options``.
        flat = {k: v for k, v in locals().items() if k in _RERANK_OPTION_NAMES and v is not None}
        call = dataclasses.replace(options or RerankOptions(), **flat)
        request = self.prepare(query, documents, top_n=top_n, min_score=min_score, use_cache=use_cache, options=call)
        (scored,) = self._loaded.scorer.score([request], self.batching)
        return self.finish(request, scored, top_n=top_n, return_documents=return_documents, min_score=min_score)

    def prepare(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        min_score: float | None = None,
        use_cache: bool = True,
        options: RerankOptions | None = None,
    ) -> ScoreRequest:
        """Check a rerank call's arguments and turn them into the engine's request (used by ``AsyncReranker``)."""
        query = check_text(query, "query")
        texts = check_documents(documents)
        if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
            raise InputError(f"top_n must be a positive integer, got {top_n!r}")
        if min_score is not None and (isinstance(min_score, bool) or not 0 <= min_score <= 1):
            raise InputError(f"min_score must be a number between 0 and 1, got {min_score!r}")
        truncation, chunking, prompt = self._resolve(options or RerankOptions())
        return ScoreRequest(
            query=query, documents=texts, truncation=truncation, chunking=chunking, prompt=prompt, use_cache=use_cache
        )

    def finish(
        self,
        request: ScoreRequest,
        scored: ScoredRequest,
        *,
        top_n: int | None,
        return_documents: bool,
        min_score: float | None,
    ) -> RerankResult:
        """Rank a scored request (used by ``AsyncReranker``)."""
        self._warn_if_cut(request, scored)
        results = rank(
            scored.logits,
            request.documents,
            top_n=top_n,
            return_documents=return_documents,
            min_score=min_score,
            spans=scored.spans,
            chunks=scored.chunks,
        )
        return RerankResult(results=results, usage=scored.usage)

    def close(self) -> None:
        """Release the model (and its GPU memory)."""
        self._loaded.scorer.backend.close()

    def __enter__(self) -> Reranker:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
