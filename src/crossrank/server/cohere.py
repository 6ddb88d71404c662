"""Cohere-compatible routes: ``/v2/rerank`` (Cohere v2) and ``/v1/rerank`` (Cohere v1 and Jina)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from crossrank.config import RerankOptions
from crossrank.errors import InputError
from crossrank.server.body import json_body
from crossrank.server.errors import RERANK_ERRORS, documented_errors
from crossrank.server.schemas import (
    MAX_NESTING,
    ApiVersion,
    BilledUnits,
    CohereV2Request,
    CohereV2Response,
    CohereV2Result,
    DocumentObject,
    EchoedDocument,
    Evidence,
    Meta,
    RerankV1Request,
    RerankV1Response,
    RerankV1Result,
    TokenUsage,
    utf8_safe,
)
from crossrank.server.service import RerankCall, RerankService, get_service
from crossrank.types import RerankResult

__all__ = ["BODIES", "document_texts", "router", "v1_response"]

router = APIRouter(tags=["rerank"])
Service = Annotated[RerankService, Depends(get_service)]
# Bodies are read by json_body (lists cut at --max-documents, big ones off the event loop), not by FastAPI.
V2Body = Annotated[CohereV2Request, Depends(json_body(CohereV2Request))]
V1Body = Annotated[RerankV1Request, Depends(json_body(RerankV1Request))]
BODIES: dict[str, type[BaseModel]] = {"/v2/rerank": CohereV2Request, "/v1/rerank": RerankV1Request}  # OpenAPI


def document_texts(documents: Sequence[str | DocumentObject], rank_fields: Sequence[str] | None = None) -> list[str]:
    """The text each document is ranked on: the string, its ``text``, or its ``rank_fields`` as ``key: value`` lines."""
    texts = []
    for i, document in enumerate(documents):
        if isinstance(document, str):
            texts.append(document)
            continue
        if document.nests_too_deep():
            raise InputError(f"documents[{i}]: its fields nest more than {MAX_NESTING} lists and objects deep")
        fields: dict[str, Any] = document.model_dump(exclude_none=True)
        if rank_fields:
            lines = [f"{name}: {fields[name]}" for name in rank_fields if name in fields]
            if not lines:
                raise InputError(f"documents[{i}] has none of the rank_fields {list(rank_fields)}")
            texts.append("\n".join(lines))
        elif document.text is not None:
            texts.append(document.text)
        elif document.image is not None:
            raise InputError(f"documents[{i}]: images are not supported; this is a text reranker")
        else:
            raise InputError(f"documents[{i}].text is required (or name the fields to rank on in rank_fields)")
    return texts


def _echo(document: str | DocumentObject) -> EchoedDocument:
    if isinstance(document, str):
        return EchoedDocument(text=utf8_safe(document))
    return EchoedDocument(**utf8_safe(document.model_dump(exclude_none=True)))


def _meta(version: str, documents: int) -> Meta:
    # Cohere bills one search unit per query and up to 100 documents.
    return Meta(
        api_version=ApiVersion(version=version),
        billed_units=BilledUnits(search_units=max(1, math.ceil(documents / 100))),
    )


def v1_response(
    model: str, result: RerankResult, documents: Sequence[str | DocumentObject], *, echo: bool
) -> RerankV1Response:
    """The ``/v1/rerank`` answer (also vLLM's ``/rerank``); documents are echoed with ``echo``."""
    return RerankV1Response(
        id=str(uuid.uuid4()),
        model=model,
        usage=TokenUsage(
            total_tokens=result.usage.total_tokens, unreadable_texts=result.usage.unreadable_texts or None
        ),
        results=[
            RerankV1Result(
                index=r.index,
                relevance_score=r.relevance_score,
                document=_echo(documents[r.index]) if echo else None,
                **Evidence.of(r),
            )
            for r in result.results
        ],
        meta=_meta("1", len(documents)),
    )


@router.post(
    "/v2/rerank",
    response_model=CohereV2Response,
    response_model_exclude_none=True,
    responses=documented_errors("/v2/rerank", *RERANK_ERRORS),
)
async def rerank_v2(body: V2Body, request: Request, response: Response, service: Service) -> CohereV2Response:
    """Cohere v2 rerank: results ``{index, relevance_score}`` by relevance, highest first."""
    texts = document_texts(body.documents)
    options = RerankOptions(
        aggregate=body.aggregate, max_tokens_per_doc=body.max_tokens_per_doc, instruction=body.instruction
    )
    call = RerankCall(
        query=body.query, documents=texts, top_n=body.top_n or None, min_score=body.min_score, options=options
    )
    result = await service.rerank(request, response, call)
    return CohereV2Response(
        id=str(uuid.uuid4()),
        results=[
            CohereV2Result(index=r.index, relevance_score=r.relevance_score, **Evidence.of(r)) for r in result.results
        ],
        meta=_meta("2", len(texts)),
    )


@router.post(
    "/v1/rerank",
    response_model=RerankV1Response,
    response_model_exclude_none=True,
    responses=documented_errors("/v1/rerank", *RERANK_ERRORS),
)
async def rerank_v1(body: V1Body, request: Request, response: Response, service: Service) -> RerankV1Response:
    """Cohere v1 and Jina rerank: documents echoed as ``{"text": ...}`` unless ``return_documents`` is false."""
    texts = document_texts(body.documents, body.rank_fields)
    options = RerankOptions(
        aggregate=body.aggregate, max_chunks_per_doc=body.max_chunks_per_doc, instruction=body.instruction
    )
    call = RerankCall(
        query=body.query, documents=texts, top_n=body.top_n or None, min_score=body.min_score, options=options
    )
    result = await service.rerank(request, response, call)
    return v1_response(service.options.model_name, result, body.documents, echo=body.return_documents)
