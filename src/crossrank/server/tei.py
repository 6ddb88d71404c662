"""``POST /rerank``: text-embeddings-inference's body (``texts``) or vLLM's and Infinity's (``documents``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from crossrank.config import RerankOptions
from crossrank.server.body import json_body
from crossrank.server.cohere import document_texts, v1_response
from crossrank.server.errors import RERANK_ERRORS, EmptyTextsError, documented_errors
from crossrank.server.schemas import Evidence, RerankV1Response, TeiRank, TeiRerankRequest, utf8_safe
from crossrank.server.service import RerankCall, RerankService, get_service

__all__ = ["BODIES", "router"]

router = APIRouter(tags=["rerank"])
Service = Annotated[RerankService, Depends(get_service)]
Body = Annotated[TeiRerankRequest, Depends(json_body(TeiRerankRequest))]  # read as cohere.py's bodies are
BODIES: dict[str, type[BaseModel]] = {"/rerank": TeiRerankRequest}  # for the OpenAPI document


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
