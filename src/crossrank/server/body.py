"""Rerank request bodies: decoded with their lists cut at the server's limit, and off the event loop when big.

FastAPI reads a JSON body with ``json.loads`` and validates it on the event loop before a route runs: a 20 MB body
of 1.4 million tiny documents held the loop (so ``/health`` too) for 8 s and grew the process by 1.1 GB, all to
be refused by the documents limit afterwards. Here the lists in ``LIMITED_LISTS`` are decoded one item at a time
and refused (413) at the first item past the limit, the rest of the body left undecoded; a big body is decoded
and validated in a worker thread, one list item per step, so the loop gets the GIL between steps.

Everything else stays as FastAPI does it, so clients see the same answers: the same JSON decoder (``json``'s),
content-type rule, 400 for a body that does not parse and 422 with FastAPI's error list for one that does not
validate; the OpenAPI document keeps the request bodies, with ``maxItems`` added (``document_bodies``).
"""

from __future__ import annotations

import asyncio
import email.message
import json
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.models import Schema
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException

from crossrank.server.errors import TooManyItemsError
from crossrank.server.service import RerankService, get_service

__all__ = ["INLINE_BYTES", "LIMITED_LISTS", "decode_limited", "document_bodies", "json_body", "parse_body"]

Model = TypeVar("Model", bound=BaseModel)
Service = Annotated[RerankService, Depends(get_service)]
Scan = Callable[[str, int], tuple[Any, int]]  # json's scanner: the value at an index, and the index after it

# The request lists bounded by --max-documents, and what their items are called in the 413 message (`inputs`:
# /tokenize's; /decode's `ids` is checked after decoding, since one sequence of ids is a list too).
LIMITED_LISTS = {"documents": "documents", "texts": "documents", "rank_fields": "fields", "inputs": "texts"}

# Bodies (and texts to tokenize) up to this size are handled on the event loop (a millisecond or two): a thread
# hop would cost as much.
INLINE_BYTES = 64 * 1024

_REF = "#/components/schemas/{model}"
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def json_body(model: type[Model]) -> Callable[[Request, RerankService], Awaitable[Model]]:
    """A FastAPI dependency giving the request body as ``model``; the route documents it with ``document_bodies``."""

    async def parse(request: Request, service: Service) -> Model:
        body = await request.body()  # at most --max-body-bytes: BodyLimitMiddleware stops it there
        content_type = request.headers.get("content-type")
        limit = service.options.max_documents
        if len(body) <= INLINE_BYTES:
            return parse_body(body, content_type, model, limit)
        return await asyncio.to_thread(parse_body, body, content_type, model, limit)

    return parse


def parse_body(body: bytes, content_type: str | None, model: type[Model], max_items: int) -> Model:
    """``body`` validated as ``model``, the way FastAPI reads a JSON body, but its lists cut at ``max_items``.

    Raises:
        TooManyItemsError: a list in ``LIMITED_LISTS`` has more than ``max_items`` items (413).
        RequestValidationError: the body is not JSON (400) or not a valid ``model`` (422), as FastAPI raises it.
        HTTPException: the body is not Unicode, or JSON that Python will not decode (400, as FastAPI answers).
    """
    if not body:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    value: Any = body  # FastAPI validates other media types' bytes as they are, and so fails them
    if _is_json(content_type):
        try:
            value = decode_limited(body.decode(json.detect_encoding(body), "surrogatepass"), max_items)
        except json.JSONDecodeError as exc:
            error = {"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error", "input": {}}
            raise RequestValidationError([{**error, "ctx": {"error": exc.msg}}]) from None
        except (ValueError, RecursionError) as exc:  # not Unicode, too deep, an integer past 4,300 digits
            raise HTTPException(400, "There was an error parsing the body") from exc
    try:
        return model.model_validate(value, from_attributes=True)  # as FastAPI validates a body
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


def _is_json(content_type: str | None) -> bool:
    # FastAPI's rule (strict_content_type): JSON only when the request says so.
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def decode_limited(text: str, max_items: int) -> Any:
    """``json.loads(text)``, except that a top-level object's ``LIMITED_LISTS`` stop at ``max_items`` items.

    The top-level object and those lists are walked here with the messages and positions of ``json``'s own
    decoder; every other value, and each list item, is decoded by ``json``'s C scanner.
    """
    decoder = json.JSONDecoder()
    start = _skip(text, 0)
    if text[start : start + 1] != "{":
        return decoder.decode(text)
    scan: Scan = decoder.scan_once  # type: ignore[attr-defined]  # json's C scanner, which decode uses
    value, end = _object(text, start + 1, scan, max_items)
    end = _skip(text, end)
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def _skip(text: str, index: int) -> int:
    """The index of the first non-whitespace character from ``index`` on."""
    return _WHITESPACE.match(text, index).end()  # type: ignore[union-attr]  # it matches the empty string


def _object(text: str, end: int, scan: Scan, max_items: int) -> tuple[Any, int]:
    """The object whose ``{`` ends before ``end``, and the index after its ``}`` (json.decoder.JSONObject's walk)."""
    pairs: list[tuple[str, Any]] = []
    end = _skip(text, end)
    if text[end : end + 1] == "}":
        return {}, end + 1
    if text[end : end + 1] != '"':
        raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, end)
    while True:
        key, end = scan(text, end)  # a string: the same as json.decoder.scanstring after the quote
        end = _skip(text, end)
        if text[end : end + 1] != ":":
            raise json.JSONDecodeError("Expecting ':' delimiter", text, end)
        end = _skip(text, end + 1)
        try:
            if key in LIMITED_LISTS and text[end : end + 1] == "[":
                value, end = _list(text, end + 1, scan, key, max_items)
            else:
                value, end = scan(text, end)
        except StopIteration as stop:
            raise json.JSONDecodeError("Expecting value", text, stop.value) from None
        pairs.append((key, value))
        end = _skip(text, end)
        delimiter = text[end : end + 1]
        end += 1
        if delimiter == "}":
            return dict(pairs), end
        if delimiter != ",":
            raise json.JSONDecodeError("Expecting ',' delimiter", text, end - 1)
        end = _skip(text, end)
        if text[end : end + 1] != '"':
            raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, end)


def _list(text: str, end: int, scan: Scan, field: str, max_items: int) -> tuple[list[Any], int]:
    """The list whose ``[`` ends before ``end``, refused past ``max_items`` items (json.decoder.JSONArray's walk)."""
    items: list[Any] = []
    end = _skip(text, end)
    if text[end : end + 1] == "]":
        return items, end + 1
    while True:
        item, end = scan(text, end)  # StopIteration: the caller's "Expecting value"
        items.append(item)
        if len(items) > max_items:
            unit = LIMITED_LISTS[field]
            fix = f"send at most {max_items} {unit} per request (server flag --max-documents)"
            raise TooManyItemsError(field, max_items, unit=unit, fix=fix)
        end = _skip(text, end)
        delimiter = text[end : end + 1]
        end += 1
        if delimiter == "]":
            return items, end
        if delimiter != ",":
            raise json.JSONDecodeError("Expecting ',' delimiter", text, end - 1)
        end = _skip(text, end)


def document_bodies(app: FastAPI, routes: dict[str, type[BaseModel]], max_items: int) -> None:
    """Declare each route's JSON body (path -> model) in ``app``'s OpenAPI document, lists with ``maxItems``.

    The routes read their bodies with ``json_body``, which FastAPI does not see as a body; this puts back what
    FastAPI writes for a declared body model, and says the limit each list is cut at (``--max-documents``).
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()  # FastAPI keeps it in app.openapi_schema: amended once, here
        models = sorted(set(routes.values()), key=lambda m: m.__name__)
        names, definitions = models_json_schema([(m, "validation") for m in models], ref_template=_REF)
        defs = definitions["$defs"]
        for model in models:
            properties = defs[model.__name__].get("properties", {})
            for field in LIMITED_LISTS.keys() & properties.keys():
                for option in [properties[field], *properties[field].get("anyOf", [])]:
                    if option.get("type") == "array":
                        option["maxItems"] = max_items
        # The round trip FastAPI's get_openapi makes too (numbers as its OpenAPI model types them, no null defaults).
        components = {name: jsonable_encoder(Schema(**d), by_alias=True, exclude_none=True) for name, d in defs.items()}
        schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
        for path, model in routes.items():
            body = {"content": {"application/json": {"schema": names[(model, "validation")]}}, "required": True}
            for operation in schema["paths"][path].values():
                operation["requestBody"] = body
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
