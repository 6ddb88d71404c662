"""Wire models of the dialects: Cohere v2, Cohere v1 + Jina (``/v1/rerank``), TEI + vLLM (``/rerank``), Infinity.

Field names, types and defaults follow each upstream API (see PEERS.md). Types are strict, as the
OpenAPI document says them: ``"5"`` is not an integer nor ``"true"`` a boolean (422), while ``5.0`` is an
integer, as in JSON Schema. Unknown fields are ignored, so clients that send more (Cohere's ``priority``,
vLLM's ``truncate_prompt_tokens``) keep working. Responses leave absent optional fields out rather than
sending ``null``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from crossrank.config import MAX_CHUNKS_PER_DOC, MAX_INSTRUCTION_CHARS
from crossrank.engine.tokenizer import replace_surrogates
from crossrank.types import ScoredDocument

__all__ = [
    "MAX_NESTING",
    "CohereErrorResponse",
    "CohereV2Request",
    "CohereV2Response",
    "DecodeRequest",
    "DocumentObject",
    "InfinityRerankRequest",
    "InfinityRerankResponse",
    "InfinityResult",
    "InfinityUsage",
    "ModelCard",
    "ModelList",
    "RerankV1Request",
    "RerankV1Response",
    "SimpleToken",
    "StatusResponse",
    "TeiErrorResponse",
    "TeiRank",
    "TeiRerankRequest",
    "TokenizeRequest",
    "utf8_safe",
]


def utf8_safe(value: Any) -> Any:
    """``value`` (a string, or JSON lists and objects of them) with lone surrogates replaced by U+FFFD."""
    if isinstance(value, str):
        # The engine scores such text as U+FFFD; echoing it the same way keeps one code point for one.
        return replace_surrogates(value)
    if isinstance(value, list):
        return [utf8_safe(item) for item in value]
    if isinstance(value, dict):
        return {utf8_safe(key): utf8_safe(item) for key, item in value.items()}
    return value


TopN = Annotated[StrictInt | None, Field(ge=0, description="Keep the best N results; absent or 0: all.")]
MinScore = Annotated[
    StrictFloat | None,
    Field(ge=0, le=1, description="crossrank extension: drop results whose relevance_score is below this."),
]


Aggregate = Annotated[
    str | None,
    Field(
        # K has at most 6 digits: more windows than a document may have (max_chunks_per_doc) means all of them.
        pattern=r"^(max|mean|first|topk_mean:[1-9][0-9]{0,5})$",
        description="crossrank extension: how a long document's windows make its score (default max).",
    ),
]


# Longer than its limit is a 413 naming the field (RerankService.check_limits), as the query's and documents' are.
Instruction = Annotated[
    StrictStr | None,
    Field(
        description="crossrank extension: a decoder reranker's task instruction (default: its family's, see "
        f"/info); at most {MAX_INSTRUCTION_CHARS} characters. Cross-encoders take none and ignore it.",
    ),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    min_score: MinScore = None
    aggregate: Aggregate = None
    instruction: Instruction = None

    @field_validator("top_n", "max_tokens_per_doc", "max_chunks_per_doc", mode="before", check_fields=False)
    @classmethod
    def _integral(cls, value: Any) -> Any:
        # JSON Schema's "integer" includes 5.0 (Python's json.dumps of a float count); "5" and 5.5 stay errors.
        return int(value) if isinstance(value, float) and value.is_integer() else value


# How deep a document object's extra fields may nest: they are echoed, and JSON encoders refuse deep nesting
# (pydantic's at 255 levels, Python's json parser accepts about 1,000).
MAX_NESTING = 32


def _nests_at_most(value: Any, limit: int) -> bool:
    """Whether lists and objects in ``value`` nest ``limit`` levels deep at most (no recursion: any depth is safe)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        if children and depth >= limit:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


class DocumentObject(BaseModel):
    """A document given as an object: ``text`` (Cohere v1, Jina), other fields kept (Cohere v1 echoes them)."""

    model_config = ConfigDict(extra="allow")

    text: StrictStr | None = None
    image: StrictStr | None = None

    def nests_too_deep(self) -> bool:
        """Whether the extra fields nest more than ``MAX_NESTING`` lists and objects deep."""
        return not _nests_at_most(self.model_extra or {}, MAX_NESTING)


Document = StrictStr | DocumentObject


class CohereV2Request(_Request):
    """``POST /v2/rerank`` (Cohere v2). ``model`` is accepted and ignored: this server runs one model."""

    model: StrictStr | None = None
    query: StrictStr
    documents: list[Document]
    top_n: TopN = None
    max_tokens_per_doc: StrictInt | None = Field(default=None, ge=1, description="Cohere's default: 4096.")


class RerankV1Request(_Request):
    """``POST /v1/rerank``: Cohere v1 (documents as strings or objects, ``rank_fields``) and Jina."""

    model: StrictStr | None = None
    query: StrictStr
    documents: list[Document]
    top_n: TopN = None
    return_documents: StrictBool = Field(
        default=True, description="Echo each document (Jina's default; Cohere v1 clients ignore the extra field)."
    )
    rank_fields: list[StrictStr] | None = Field(
        default=None, description="Cohere v1: which fields of object documents to rank on, in order."
    )
    max_chunks_per_doc: StrictInt | None = Field(default=None, ge=1, le=MAX_CHUNKS_PER_DOC)


# Exactly one of `texts` and `documents` is a list (the validator below), as JSON Schema says it.
_ONE_LIST: dict[str, JsonValue] = {
    "oneOf": [{"required": [name], "properties": {name: {"type": "array"}}} for name in ("texts", "documents")]
}


class TeiRerankRequest(_Request):
    """``POST /rerank``: text-embeddings-inference (``texts``) or vLLM/Infinity (``documents``)."""

    model_config = ConfigDict(json_schema_extra=_ONE_LIST)

    query: StrictStr
    texts: list[StrictStr] | None = Field(default=None, description="TEI: the candidates (answer: a bare list).")
    documents: list[Document] | None = Field(
        default=None, description="vLLM/Infinity: the candidates (answer: an object like /v1/rerank's)."
    )
    raw_scores: StrictBool = Field(default=False, description="TEI: raw logits instead of sigmoid scores.")
    return_text: StrictBool = False
    truncate: StrictBool | None = Field(default=None, description="TEI: false refuses pairs longer than max_length.")
    truncation_direction: Literal["right", "left", "Right", "Left"] = "right"
    model: StrictStr | None = None
    top_n: TopN = None

    @model_validator(mode="after")
    def _one_list(self) -> TeiRerankRequest:
        if (self.texts is None) == (self.documents is None):
            raise ValueError("send the candidates in exactly one of `texts` (TEI) or `documents` (vLLM)")
        return self


TokenId = Annotated[StrictInt, Field(ge=0)]


class TokenizeRequest(BaseModel):
    """``POST /tokenize`` (TEI): each input encoded alone, as the model's tokenizer splits it."""

    model_config = ConfigDict(extra="ignore")

    inputs: StrictStr | list[StrictStr]
    add_special_tokens: StrictBool = True
    prompt_name: StrictStr | None = Field(
        default=None, description="TEI: a sentence-transformers prompt; rerankers have none, so only null is valid."
    )


class SimpleToken(BaseModel):
    """One token; ``start`` and ``stop`` are UTF-8 byte offsets in the input (as TEI's), null on special tokens."""

    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


class DecodeRequest(BaseModel):
    """``POST /decode`` (TEI): one sequence of token ids, or a list of them."""

    model_config = ConfigDict(extra="ignore")

    ids: list[TokenId] | list[list[TokenId]]
    skip_special_tokens: StrictBool = True


class InfinityRerankRequest(_Request):
    """``POST /infinity/rerank``: Infinity's ``RerankInput``."""

    query: StrictStr
    documents: list[StrictStr] = Field(min_length=1)
    return_documents: StrictBool = False
    raw_scores: StrictBool = Field(default=False, description="Raw logits instead of sigmoid scores.")
    model: StrictStr = "default/not-specified"
    top_n: StrictInt | None = Field(default=None, gt=0)


class InfinityResult(BaseModel):
    relevance_score: float
    index: int
    document: str | None = Field(description="The document as sent, with return_documents; else null.")


class InfinityUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class InfinityRerankResponse(BaseModel):
    """Infinity's ``ReRankResult``."""

    object: Literal["rerank"] = "rerank"
    results: list[InfinityResult]
    model: str
    usage: InfinityUsage
    id: str
    created: int


class ModelCard(BaseModel):
    """The served model in an OpenAI-style list (vLLM's and Infinity's fields)."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="When the server started (Unix seconds).")
    owned_by: str = "crossrank"
    root: str = Field(description="vLLM: the model the served name stands for.")
    max_model_len: int | None = Field(description="vLLM: tokens per pair at most; null while the model loads.")
    capabilities: list[str] = Field(description="Infinity: what the model serves.")
    backend: str | None = Field(description="Infinity: the inference backend; null while the model loads.")


class ModelList(BaseModel):
    """``GET /v1/models``, ``/models`` and ``/infinity/models``."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class ApiVersion(BaseModel):
    version: str
    is_deprecated: bool = False
    is_experimental: bool = False


class BilledUnits(BaseModel):
    search_units: int


class Meta(BaseModel):
    api_version: ApiVersion
    billed_units: BilledUnits


class EvidenceSpan(BaseModel):
    """Characters ``[start, end)`` of the document: ``document[start:end]`` is the best window."""

    start: int
    end: int


class Evidence(BaseModel):
    """crossrank extension, only on documents read in several windows (absent otherwise)."""

    span: EvidenceSpan | None = Field(default=None, description="the best-scoring window's characters")
    chunks: int | None = Field(default=None, description="windows the document was scored in")

    @classmethod
    def of(cls, document: ScoredDocument) -> dict[str, Any]:
        """``span`` and ``chunks`` of a chunked document, as fields for a result model; else none."""
        if document.chunks <= 1 or document.span is None:
            return {}
        span = EvidenceSpan(start=document.span.start, end=document.span.end)
        return {"span": span, "chunks": document.chunks}


class CohereV2Result(Evidence):
    index: int
    relevance_score: float


class CohereV2Response(BaseModel):
    id: str
    results: list[CohereV2Result]
    meta: Meta


class EchoedDocument(BaseModel):
    model_config = ConfigDict(extra="allow")

    text: str | None = None


class RerankV1Result(Evidence):
    index: int
    relevance_score: float
    document: EchoedDocument | None = None


class TokenUsage(BaseModel):
    total_tokens: int
    unreadable_texts: int | None = Field(
        default=None,
        description="crossrank extension, only when some: texts mostly in tokens the model cannot read (their "
        "scores are guesses).",
    )


class RerankV1Response(BaseModel):
    id: str
    model: str
    usage: TokenUsage
    results: list[RerankV1Result]
    meta: Meta


class TeiRank(Evidence):
    index: int
    score: float
    text: str | None = None


class CohereErrorResponse(BaseModel):
    """An error on ``/v1`` and ``/v2`` routes, in Cohere's shape."""

    message: str
    request_id: str | None = Field(default=None, description="On server failures (5xx): the log line to look for.")


class TeiErrorResponse(BaseModel):
    """An error on every other route, in text-embeddings-inference's shape."""

    error: str
    error_type: str
    request_id: str | None = Field(default=None, description="On server failures (5xx): the log line to look for.")


class StatusResponse(BaseModel):
    """``/health`` and ``/ready``: ``ok``, ``ready``, ``loading`` or ``failed``."""

    status: str
