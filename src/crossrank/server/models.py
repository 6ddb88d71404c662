"""The served model as an OpenAI-style list: ``GET /v1/models``, ``/models`` (vLLM) and ``/infinity/models``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from crossrank.server.errors import documented_errors
from crossrank.server.infinity import BASE
from crossrank.server.schemas import ModelCard, ModelList
from crossrank.server.service import RerankService, get_service

__all__ = ["PATHS", "router"]

PATHS = ("/v1/models", "/models", f"{BASE}/models")
router = APIRouter(tags=["operations"])
Service = Annotated[RerankService, Depends(get_service)]


async def list_models(service: Service) -> ModelList:
    """The one served model, with vLLM's and Infinity's extra fields (those known once it is loaded)."""
    name = service.options.model_name
    reranker = service.state.reranker.reranker if service.state.reranker is not None else None
    card = ModelCard(
        id=name,
        created=int(service.state.started),
        root=name,
        max_model_len=reranker.truncation.max_length if reranker else None,
        capabilities=["rerank"],
        backend=reranker.scorer.backend.name if reranker else None,
    )
    return ModelList(data=[card])


for _path in PATHS:
    router.add_api_route(
        _path, list_models, methods=["GET"], response_model=ModelList, responses=documented_errors(_path, 401)
    )
