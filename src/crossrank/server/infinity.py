"""Infinity's API under the base URL ``/infinity``: ``POST /infinity/rerank`` and ``GET /infinity/health``.

Infinity (michaelfeil/infinity) serves its routes under a URL prefix; clients given ``http://HOST:PORT/infinity``
as their base URL (LiteLLM's ``infinity/`` provider, Infinity's own client) get its exact shapes here: documents
echoed as plain strings, ``object``/``created``/``usage.prompt_tokens``. ``/rerank`` keeps vLLM's answer.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from crossrank.config import RerankOptions
from crossrank.server import ops
from crossrank.server.body import json_body
from crossrank.server.errors import RERANK_ERRORS, documented_errors
from crossrank.server.schemas import (
    InfinityRerankRequest,
    InfinityRerankResponse,
    InfinityResult,
    InfinityUsage,
    TeiErrorResponse,
    utf8_safe,
)
from crossrank.server.service import RerankCall, RerankService, get_service

__all__ = ["BASE", "BODIES", "router"]

BASE = "/infinity"
router = APIRouter(prefix=BASE, tags=["infinity"])
Service = Annotated[RerankService, Depends(get_service)]
Body = Annotated[InfinityRerankRequest, Depends(json_body(InfinityRerankRequest))]  # as cohere.py's bodies
BODIES: dict[str, type[BaseModel]] = {f"{BASE}/rerank": InfinityRerankRequest}  # for the OpenAPI document


@router.post(
    "/rerank", response_model=InfinityRerankResponse, responses=documented_errors(f"{BASE}/rerank", *RERANK_ERRORS)
)
async def rerank(body: Body, request: Request, response: Response, service: Service) -> InfinityRerankResponse:
    """Infinity's rerank: results ``{relevance_score, index, document}``, best first (``document``: str or null)."""
    call = RerankCall(
        query=body.query,
        documents=body.documents,
        top_n=body.top_n,
        min_score=body.min_score,
        options=RerankOptions(aggregate=body.aggregate, instruction=body.instruction),
    )
    result = await service.rerank(request, response, call)
    tokens = result.usage.total_tokens
    return InfinityRerankResponse(
        results=[
            InfinityResult(
                relevance_score=r.score if body.raw_scores else r.relevance_score,
                index=r.index,
                document=utf8_safe(body.documents[r.index]) if body.return_documents else None,
            )
            for r in result.results
        ],
        model=service.options.model_name,
        usage=InfinityUsage(prompt_tokens=tokens, total_tokens=tokens),
        id=f"infinity-{uuid.uuid4()}",
        created=int(time.time()),
    )


@router.get(
    "/health",
    response_model=None,
    responses={
        200: {"description": 'The process serves: Infinity\'s `{"unix": <time>}`.'},
        503: {"model": TeiErrorResponse, "description": "The model failed to load or the scoring worker stopped."},
    },
)
async def health(service: Service) -> JSONResponse:
    """Infinity's health: ``{"unix": <seconds>}`` whenever ``/health`` answers 200 (no key needed either)."""
    answer = await ops.health(service)
    if answer.status_code != 200:
        return answer
    return JSONResponse({"unix": time.time()})
