"""Schema fuzzing: schemathesis generates requests from the server's own OpenAPI document, for every route, with the
right key, a wrong one and none; every answer must be documented (status, content type, body schema), never a 5xx,
and the server must serve normally afterwards. Hostile JSON that generators leave out (lone surrogates, control
characters, deep nesting, huge numbers) is sent by hand.

Set CROSSRANK_FUZZ_SEED to replay a run (each run records its seed).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from server_process import ServerProcess, running_server

pytestmark = pytest.mark.slow

KEY = "fuzz-key-4f1c9a7e"
LIMITS = {"--max-documents": "16", "--max-document-chars": "400", "--max-query-chars": "200"}
LIMITS |= {"--max-body-bytes": "32000", "--max-queue-pairs": "512", "--max-wait-ms": "0"}
ROUTES = {
    "POST /v2/rerank",
    "POST /v1/rerank",
    "POST /rerank",
    "GET /health",
    "GET /ready",
    "GET /info",
    "GET /metrics",
    "POST /tokenize",
    "POST /decode",
    "POST /infinity/rerank",
    "GET /infinity/health",
    "GET /infinity/models",
    "GET /v1/models",
    "GET /models",
}
OPEN = {"GET /health", "GET /infinity/health"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# Generated examples per route and way of calling it (rerank routes get the most; a GET without parameters varies
# only in its Authorization header).
EXAMPLES = {
    "key": (180, 12),  # (rerank routes, other routes)
    "key-negative": (100, 10),
    "wrong-key": (35, 15),
    "no-key": (25, 5),
}
# A list longer than --max-documents (the schema's maxItems) is refused with the size limit's 413, which
# negative_data_rejection must accept beside its default statuses.
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5xx"]
            }
        }
    }
)
SEED = int(os.environ.get("CROSSRANK_FUZZ_SEED") or random.randrange(2**32))


@dataclass
class Tally:
    """What a fuzz run sent and got back."""

    requests: int = 0
    sent: Counter[str] = field(default_factory=Counter)  # by route and way of calling it
    statuses: Counter[int] = field(default_factory=Counter)
    by_auth: Counter[str] = field(default_factory=Counter)
    violations: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def fail(self, kind: str, detail: str) -> None:
        self.violations[kind] += 1
        if len(self.examples) < 5:
            self.examples.append(f"{kind}: {detail[:1500]}")


@pytest.fixture(scope="module")
def fuzz_server(english_model_dir: Path) -> Iterator[ServerProcess]:
    """The real server with one API key and small limits, so every generated request is cheap."""
    args = ["-m", str(english_model_dir), "--device", "cpu", "--api-key", KEY, "--slow-ms", "10000"]
    with running_server([*args, *(x for pair in LIMITS.items() for x in pair)], api_key=KEY) as server:
        yield server


def _auth_sent(response: requests.Response) -> str:
    value = response.request.headers.get("Authorization")
    if value is None:
        return "no-key"
    return "key" if value == f"Bearer {KEY}" else "wrong-key"


def _fuzz(
    operation: Any,
    way: str,
    mode: GenerationMode,
    examples: int,
    tally: Tally,
    prepare: Callable[[Any], dict[str, str] | None],
    checks: list[Any],
    session: requests.Session,
) -> None:
    """Send ``examples`` generated requests for ``operation`` and check each answer; failures are tallied."""
    label = operation.label

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @seed(SEED)
    def run(case: Any) -> None:
        headers = prepare(case)
        try:
            response = case.call(session=session, headers=headers, timeout=60)
        except requests.RequestException as exc:
            tally.requests += 1
            tally.fail("transport", f"{label}: {exc!r}")
            return
        tally.requests += 1
        tally.sent[f"{label} {way}"] += 1
        tally.statuses[response.status_code] += 1
        sent = _auth_sent(response)
        tally.by_auth[sent] += 1
        if label not in OPEN and (sent == "key") == (response.status_code == 401):
            tally.fail("auth", f"{label} with {sent}: {response.status_code} {response.text[:300]}")
        try:
            case.validate_response(response, checks=checks, headers=headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                tally.fail(type(failure).__name__, f"{label} ({mode.value}, {sent}): {group}")

    run()


def _with_key(case: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def _generated_key(case: Any) -> None:
    # The OpenAPI document declares the Bearer scheme: schemathesis makes up a token for it (always wrong).
    return None


def _without_key(case: Any) -> None:
    if case.headers:
        case.headers.pop("Authorization", None)


def _run_all(schema: Any, tally: Tally, *, auth: bool) -> set[str]:
    session = requests.Session()
    labels = set()
    ways = [("key", GenerationMode.POSITIVE, _with_key), ("key-negative", GenerationMode.NEGATIVE, _with_key)]
    if auth:
        ways += [("wrong-key", GenerationMode.POSITIVE, _generated_key)]
        ways += [("no-key", GenerationMode.POSITIVE, _without_key)]
    for result in schema.get_all_operations():
        operation = result.ok()
        labels.add(operation.label)
        rerank = operation.method.upper() == "POST"
        for way, mode, prepare in ways:
            if mode is GenerationMode.NEGATIVE and not (rerank or (auth and operation.label not in OPEN)):
                continue  # nothing in the request to make invalid
            checks = [*CHECKS, negative_data_rejection] if mode is GenerationMode.NEGATIVE and rerank else CHECKS
            examples = EXAMPLES[way][0 if rerank else 1]
            _fuzz(operation, way, mode, examples, tally, prepare, checks, session)
    return labels


def _serves_normally(server: ServerProcess, headers: dict[str, str]) -> bool:
    health = httpx.get(server.url + "/health", timeout=30)
    body = {"query": "what is a panda?", "documents": ["hi", "The giant panda is a bear."]}
    answer = httpx.post(server.url + "/v2/rerank", json=body, headers=headers, timeout=30)
    return (
        server.process.poll() is None
        and health.status_code == 200
        and answer.status_code == 200
        and answer.json()["results"][0]["index"] == 1
    )


def _report(tally: Tally) -> dict[str, Any]:
    return {
        "requests sent": tally.requests,
        "by Authorization": dict(sorted(tally.by_auth.items())),
        "statuses": dict(sorted(tally.statuses.items())),
        "5xx": sum(n for status, n in tally.statuses.items() if status >= 500),
        "schema/status/content-type violations": sum(
            n for kind, n in tally.violations.items() if kind not in ("auth", "transport")
        ),
        "auth violations": tally.violations["auth"],
        "transport errors": tally.violations["transport"],
    }


def test_generated_requests_get_documented_answers_with_and_without_a_key(
    fuzz_server: ServerProcess, record_figures: Callable[..., None]
) -> None:
    """schemathesis on every route, with the key, a wrong key and none: no 5xx, answers as documented, 401 iff no key.

    The answers' status codes, content types, headers and bodies must be the ones /openapi.json documents; a request
    is answered 401 exactly when it does not carry the right key (but /health needs none).
    """
    headers = {"Authorization": f"Bearer {KEY}"}
    schema = schemathesis.openapi.from_url(
        fuzz_server.url + "/openapi.json", headers=headers, timeout=30, config=CONFIG
    )
    started = time.perf_counter()
    tally = Tally()
    labels = _run_all(schema, tally, auth=True)
    seconds = time.perf_counter() - started
    alive = _serves_normally(fuzz_server, headers)
    figures = {**_report(tally), "server alive and scoring after": alive, "seconds": round(seconds, 1)}
    record_figures(
        {
            "generator": f"schemathesis {schemathesis.__version__} (positive and negative), hypothesis seed {SEED}",
            "routes": len(labels),
            "server": "MiniLM-L6 English, --api-key, " + " ".join(f"{k} {v}" for k, v in LIMITS.items()),
            "checks": ", ".join(check.__name__ for check in [*CHECKS, negative_data_rejection]) + ", 401 iff key wrong",
        },
        figures,
    )
    assert not tally.violations, "\n\n".join(tally.examples)
    assert labels == ROUTES
    assert tally.requests >= 1000, tally.sent
    assert {"key", "wrong-key", "no-key"} <= set(tally.by_auth)
    assert figures["5xx"] == 0
    assert alive, fuzz_server.log()[-3000:]


def test_generated_requests_on_a_server_without_auth(
    open_server: ServerProcess, record_figures: Callable[..., None]
) -> None:
    """schemathesis on every route of a server started without --api-key: no 5xx, answers as documented, never 401."""
    schema = schemathesis.openapi.from_url(open_server.url + "/openapi.json", timeout=30, config=CONFIG)
    assert "securitySchemes" not in schema.raw_schema.get("components", {})
    tally = Tally()
    labels = _run_all(schema, tally, auth=False)
    alive = _serves_normally(open_server, {})
    figures = {**_report(tally), "server alive and scoring after": alive}
    record_figures(
        {"generator": f"schemathesis {schemathesis.__version__}, hypothesis seed {SEED}", "routes": len(labels)},
        figures,
    )
    assert not tally.violations, "\n\n".join(tally.examples)
    assert labels == ROUTES
    assert tally.requests >= 300, tally.sent
    assert 401 not in tally.statuses
    assert alive


# Bodies JSON generators do not produce: each is sent to every rerank route.
_DEEP = 600


def _hostile_bodies() -> dict[str, bytes]:
    return {
        "lone surrogates": b'{"query": "q\\ud800", "documents": ["a\\udfff b", "\\udc00", "\\ud83d"]}',
        "control characters": b'{"query": "\\u0000\\u0001\\u001f\\u007f", "documents": ["\\u0000", "\\u200b\\u2028"]}',
        "raw control byte": b'{"query": "q", "documents": ["\x00\x01"]}',
        "invalid UTF-8": b'{"query": "q", "documents": ["\xff\xfe"]}',
        "UTF-8 surrogate bytes": b'{"query": "q", "documents": ["\xed\xa0\x80"]}',
        "byte order mark": b'\xef\xbb\xbf{"query": "q", "documents": ["a"]}',
        "deep array": b"[" * _DEEP * 10 + b"]" * _DEEP * 10,
        "deep document field": (
            b'{"query": "q", "documents": [{"text": "a", "x": ' + b"[" * _DEEP + b"]" * _DEEP + b"}]}"
        ),
        "deep document object": (
            b'{"query": "q", "documents": [{"text": "a", "x": ' + b'{"a":' * _DEEP + b"1" + b"}" * _DEEP + b"}]}"
        ),
        "surrogate in a field name": b'{"query": "q", "documents": [{"text": "x", "t\\ud800": "\\udc00"}]}',
        "surrogate in an extra field": b'{"query": "q", "documents": [{"text": "x", "f": "\\udc00"}]}',
        "5,000-digit top_n": b'{"query": "q", "documents": ["a"], "top_n": ' + b"9" * 5000 + b"}",
        "huge top_n": b'{"query": "q", "documents": ["a"], "top_n": 99999999999999999999999}',
        "1e400": b'{"query": "q", "documents": ["a"], "top_n": 1e400}',
        "NaN min_score": b'{"query": "q", "documents": ["a"], "min_score": NaN}',
        "Infinity min_score": b'{"query": "q", "documents": ["a"], "min_score": -Infinity}',
        "huge max_tokens_per_doc": b'{"query": "q", "documents": ["a"], "max_tokens_per_doc": 9223372036854775808}',
        "huge topk_mean": b'{"query": "q", "documents": ["a b"], "aggregate": "topk_mean:99999999999999999999"}',
        "duplicate keys": b'{"query": "q", "query": 5, "documents": ["a"]}',
        "not an object": b'"just a string"',
        "null": b"null",
        "empty": b"",
        "truncated": b'{"query": "q", "documents": ["a"',
    }


def test_hostile_json_bodies_get_an_answer_or_4xx_never_5xx(
    fuzz_server: ServerProcess, record_figures: Callable[..., None]
) -> None:
    """Hostile JSON (lone surrogates, control characters, deep nesting, huge numbers, NaN): 2xx or 4xx, never 5xx.

    Every rerank route, each 4xx in the route's error shape; lone surrogates come back as U+FFFD where text is echoed.
    """
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    statuses: Counter[int] = Counter()
    bad: list[str] = []
    bodies = _hostile_bodies()
    sends = [(path, name, body) for path in ("/v2/rerank", "/v1/rerank", "/rerank") for name, body in bodies.items()]
    # /rerank again in TEI's dialect (`texts`); above it is vLLM's (`documents`).
    sends += [("/rerank", f"{name} (TEI)", body.replace(b'"documents"', b'"texts"')) for name, body in bodies.items()]
    for path, name, body in sends:
        response = httpx.post(fuzz_server.url + path, content=body, headers=headers, timeout=60)
        statuses[response.status_code] += 1
        try:
            answer = response.json()
        except json.JSONDecodeError:
            answer = None
        error_keys = {"message"} if path.startswith("/v") else {"error", "error_type"}
        ok = response.status_code < 300 or (400 <= response.status_code < 500 and set(answer or {}) == error_keys)
        if not ok:
            bad.append(f"{path} {name}: {response.status_code} {response.text[:300]}")
    # The surrogates come back as U+FFFD wherever text is echoed.
    echo = httpx.post(
        fuzz_server.url + "/rerank",
        content=b'{"query": "q", "texts": ["a\\udfff b"], "return_text": true}',
        headers=headers,
    )
    v1 = httpx.post(fuzz_server.url + "/v1/rerank", content=bodies["surrogate in an extra field"], headers=headers)
    alive = _serves_normally(fuzz_server, {"Authorization": f"Bearer {KEY}"})
    record_figures(
        {"bodies": len(bodies), "routes": "/v2/rerank, /v1/rerank, /rerank (vLLM and TEI bodies)"},
        {
            "requests": sum(statuses.values()),
            "statuses": dict(sorted(statuses.items())),
            "5xx": sum(n for s, n in statuses.items() if s >= 500),
            "wrong shape": len(bad),
            "server alive after": alive,
        },
    )
    assert not bad, "\n".join(bad)
    assert echo.status_code == 200 and echo.json()[0]["text"] == "a\ufffd b"
    assert v1.status_code == 200 and v1.json()["results"][0]["document"] == {"text": "x", "f": "\ufffd"}
    assert alive
