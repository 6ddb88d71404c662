"""text-embeddings-inference's routes: ``POST /rerank`` (TEI's ``texts`` or vLLM's ``documents``), ``/tokenize``
and ``/decode``; TEI's ``/info`` fields (``info_fields``, served by ops.py)."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel
from tokenizers import Encoding

from crossrank.config import RerankOptions
from crossrank.errors import InputError, IntegrityError, LimitExceededError
from crossrank.models.integrity import read_manifest
from crossrank.models.resolve import snapshot_commit
from crossrank.server.body import INLINE_BYTES, json_body
from crossrank.server.cohere import document_texts, v1_response
from crossrank.server.errors import RERANK_ERRORS, EmptyTextsError, documented_errors
from crossrank.server.schemas import (
    DecodeRequest,
    Evidence,
    RerankV1Response,
    SimpleToken,
    TeiRank,
    TeiRerankRequest,
    TokenizeRequest,
    utf8_safe,
)
from crossrank.server.service import RerankCall, RerankService, get_service

__all__ = ["BODIES", "info_fields", "router"]

router = APIRouter(tags=["rerank"])
Service = Annotated[RerankService, Depends(get_service)]
Body = Annotated[TeiRerankRequest, Depends(json_body(TeiRerankRequest))]  # read as cohere.py's bodies are
TokenizeBody = Annotated[TokenizeRequest, Depends(json_body(TokenizeRequest))]
DecodeBody = Annotated[DecodeRequest, Depends(json_body(DecodeRequest))]
BODIES: dict[str, type[BaseModel]] = {  # for the OpenAPI document
    "/rerank": TeiRerankRequest,
    "/tokenize": TokenizeRequest,
    "/decode": DecodeRequest,
}
# The statuses /tokenize and /decode answer besides 200 (no queue: never 429).
_TOKEN_ERRORS = (400, 401, 408, 413, 422, 503)
T = TypeVar("T")


@router.post(
    "/rerank",
    response_model=list[TeiRank] | RerankV1Response,
    response_model_exclude_none=True,
    responses=documented_errors("/rerank", *RERANK_ERRORS),
)
async def rerank(
    body: Body, request: Request, response: Response, service: Service
) -> list[TeiRank] | RerankV1Response:
    """Rerank with TEI's body (answer: a list of ``{index, score, text?}`` by score) or vLLM's (answer: an object)."""
    top_n = body.top_n or None
    options = RerankOptions(
        aggregate=body.aggregate,
        truncate=body.truncate,
        truncation_direction="left" if body.truncation_direction.lower() == "left" else "right",
        instruction=body.instruction,
    )
    if body.texts is None:
        documents = body.documents or []
        texts = document_texts(documents)
        call = RerankCall(query=body.query, documents=texts, top_n=top_n, min_score=body.min_score, options=options)
        result = await service.rerank(request, response, call)
        return v1_response(service.options.model_name, result, documents, echo=True)
    if not body.texts:
        raise EmptyTextsError("`texts` cannot be empty")
    call = RerankCall(query=body.query, documents=body.texts, top_n=top_n, min_score=body.min_score, options=options)
    result = await service.rerank(request, response, call)
    return [
        TeiRank(
            index=r.index,
            score=r.score if body.raw_scores else r.relevance_score,
            text=utf8_safe(body.texts[r.index]) if body.return_text else None,
            **Evidence.of(r),
        )
        for r in result.results
    ]


async def _off_loop_if(big: bool, work: Callable[[], T]) -> T:
    """``work()``, in a worker thread when ``big``, so a long tokenisation does not hold the event loop."""
    return await asyncio.to_thread(work) if big else work()


def _tokens(text: str, encoding: Encoding) -> list[SimpleToken]:
    """TEI's tokens of ``text``: offsets in UTF-8 bytes, the special tokens without offsets."""
    data = text.encode("utf-8", "replace")
    # The tokenizer counts characters; TEI (Rust) counts bytes: byte offset of each character offset.
    byte_at = [0]
    for char in text:
        byte_at.append(byte_at[-1] + len(char.encode("utf-8", "replace")))
    tokens = []
    for token_id, (start, stop), special, token in zip(
        encoding.ids, encoding.offsets, encoding.special_tokens_mask, encoding.tokens, strict=True
    ):
        if special:
            tokens.append(SimpleToken(id=token_id, text=token, special=True, start=None, stop=None))
        else:
            first, last = byte_at[start], byte_at[stop]
            piece = data[first:last].decode("utf-8", "replace")
            tokens.append(SimpleToken(id=token_id, text=piece, special=False, start=first, stop=last))
    return tokens


@router.post(
    "/tokenize", response_model=list[list[SimpleToken]], responses=documented_errors("/tokenize", *_TOKEN_ERRORS)
)
async def tokenize(body: TokenizeBody, service: Service) -> list[list[SimpleToken]]:
    """TEI's tokenize: each input's tokens ``{id, text, special, start, stop}``, one list per input."""
    tokenizer = service.state.require().reranker.scorer.tokenizer
    inputs = utf8_safe([body.inputs] if isinstance(body.inputs, str) else body.inputs)
    if not inputs:
        raise EmptyTextsError("`inputs` cannot be empty")
    if body.prompt_name is not None:
        raise InputError(
            f"prompt_name: this model has no prompt named {body.prompt_name!r} (rerankers have no prompts)",
            fix="leave prompt_name out",
        )
    o = service.options
    for i, text in enumerate(inputs):
        if len(text) > o.max_document_chars:
            raise LimitExceededError(
                f"inputs[{i}]" if isinstance(body.inputs, list) else "inputs",
                len(text),
                o.max_document_chars,
                unit="characters",
                fix=f"split the text (server flag --max-document-chars: {o.max_document_chars})",
            )
    add_special = body.add_special_tokens
    big = sum(map(len, inputs)) > INLINE_BYTES
    encodings = await _off_loop_if(big, lambda: tokenizer.tokenize(inputs, add_special_tokens=add_special))
    return [_tokens(text, encoding) for text, encoding in zip(inputs, encodings, strict=True)]


@router.post("/decode", response_model=list[str], responses=documented_errors("/decode", *_TOKEN_ERRORS))
async def decode(body: DecodeBody, service: Service) -> list[str]:
    """TEI's decode: the text of one sequence of token ids, or of each of a list of them."""
    tokenizer = service.state.require().reranker.scorer.tokenizer
    # `[]` is one empty sequence (its text is ""), as TEI reads it.
    batch = bool(body.ids) and isinstance(body.ids[0], list)
    sequences: list[list[int]] = body.ids if batch else [body.ids]  # type: ignore[assignment,list-item]
    o = service.options
    if len(sequences) > o.max_documents:
        raise LimitExceededError(
            "ids",
            len(sequences),
            o.max_documents,
            unit="sequences",
            fix=f"send at most {o.max_documents} sequences per request (server flag --max-documents)",
        )
    vocab = tokenizer.vocab_size
    for i, ids in enumerate(sequences):
        field = f"ids[{i}]" if batch else "ids"
        # A token is at least one character of the text it came from: no more ids than a document's characters.
        if len(ids) > o.max_document_chars:
            raise LimitExceededError(
                field,
                len(ids),
                o.max_document_chars,
                unit="token ids",
                fix=f"decode fewer ids at once (server flag --max-document-chars: {o.max_document_chars})",
            )
        unknown = next((j for j, token in enumerate(ids) if token >= vocab), None)
        if unknown is not None:
            raise InputError(
                f"{field}[{unknown}]: {ids[unknown]} is not a token id of this model (ids run from 0 to {vocab - 1})",
                fix="decode ids that /tokenize gave",
            )
    skip = body.skip_special_tokens
    big = sum(map(len, sequences)) > INLINE_BYTES
    return await _off_loop_if(big, lambda: tokenizer.decode(sequences, skip_special_tokens=skip))


@functools.lru_cache(maxsize=4)
def _commit(folder: Path) -> str | None:
    """The hub commit the model folder holds, when it is known (``crossrank download``'s manifest or the hub cache)."""
    try:
        manifest = read_manifest(folder)
    except IntegrityError:
        manifest = None
    if manifest is not None and manifest.commit:
        return manifest.commit
    return snapshot_commit(folder)


@functools.lru_cache(maxsize=4)
def _labels(folder: Path) -> dict[str, Any]:
    """TEI's ``{"id2label", "label2id"}`` from config.json (transformers' ``LABEL_0`` when it names none)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        id2label = {str(k): str(v) for k, v in config["id2label"].items()}
    except (OSError, ValueError, KeyError, AttributeError):
        id2label = {"0": "LABEL_0"}  # loading checked the file; a model without labels has one, unnamed
    return {"id2label": id2label, "label2id": {label: int(i) for i, label in id2label.items()}}


def info_fields(service: RerankService) -> dict[str, Any]:
    """TEI's ``/info`` fields, with TEI's meaning; those about the model once it is loaded."""
    o = service.options
    fields: dict[str, Any] = {
        "served_model_name": o.model_name,
        # crossrank bounds queued work in windows, not requests; every request has one window at least.
        "max_concurrent_requests": o.queue.max_queue_pairs,
        "max_client_batch_size": o.max_documents,
        "max_batch_requests": o.queue.max_batch_requests,
        "tokenization_workers": 1,  # the scoring worker (the Rust tokenizer spreads a batch over the cores)
        "sha": None,
        "docker_label": None,
    }
    if service.state.reranker is not None:
        rr = service.state.reranker.reranker
        fields.update(
            model_sha=_commit(rr.info.path),
            model_dtype=rr.dtype,
            model_type={"reranker": _labels(rr.info.path)},
            max_input_length=rr.truncation.max_length,  # longer pairs are cut or split into windows this long
            auto_truncate=rr.truncation.truncate,
        )
    return fields
