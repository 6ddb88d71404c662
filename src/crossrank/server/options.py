"""ServerOptions: everything `crossrank serve` decides beyond the model (limits, auth, queue, alerts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from crossrank.engine.batcher import QueueOptions
from crossrank.errors import ConfigError
from crossrank.models.resolve import is_hub_id
from crossrank.settings import Settings

__all__ = ["REQUEST_SECONDS", "ServerOptions", "public_model_name"]

# With no --max-request-tokens, a request may plan this many seconds of work for the model, at the tokens/s
# measured when the server starts (README, "Limits"): small requests never wait longer behind a big one.
REQUEST_SECONDS = 5.0


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def _keys(value: str | None) -> tuple[str, ...]:
    """``CROSSRANK_API_KEY``'s keys; an empty one (``""``, ``"a,,b"``) is refused, not dropped."""
    if value is None:
        return ()
    keys = tuple(part.strip() for part in value.split(","))
    if not all(keys):
        raise ConfigError(
            f"CROSSRANK_API_KEY has an empty key ({value!r}): auth would look on while no key is needed",
            fix="set CROSSRANK_API_KEY to one key or several separated by commas, or unset it to serve without auth",
        )
    return keys


def public_model_name(model: str) -> str:
    """What answers call ``model``: a hub id as given, a local folder by its name only (never its path).

    >>> public_model_name("/srv/models/bge-reranker-v2-m3/")
    'bge-reranker-v2-m3'
    """
    if is_hub_id(model):
        return model
    return Path(model).expanduser().resolve().name or "model"


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerOptions:
    """Limits, auth and alerting of one server.

    Attributes:
        model_name: the model id reported in responses and ``/info`` (``--served-model-name``, else the hub id or
            the local folder's name: never its path).
        api_keys: accepted ``Authorization: Bearer`` keys; empty means no auth.
        queue: the micro-batcher's wait and bounds, in windows and tokens of planned work (a request over
            its ``max_request_tokens`` is answered 413 before it is queued).
        max_documents: documents per request at most (413 beyond).
        max_document_chars: characters per document at most (413 beyond).
        max_query_chars: characters of the query at most (413 beyond).
        max_body_bytes: request body size at most, checked before parsing (413 beyond).
        slow_ms: a rerank request slower than this logs a warning and counts in ``crossrank_slow_requests_total``.
        cors_origins: origins allowed by CORS; empty leaves CORS off.
        body_timeout: seconds a request body may pause between two chunks (408 and the connection closed beyond).
        ui: serve the ``/ui`` playground page.
    """

    model_name: str
    api_keys: tuple[str, ...] = ()
    queue: QueueOptions = field(default_factory=QueueOptions)
    max_documents: int = 1000
    max_document_chars: int = 200_000
    max_query_chars: int = 20_000
    max_body_bytes: int = 20_000_000
    slow_ms: float = 200.0
    cors_origins: tuple[str, ...] = ()
    body_timeout: float = 30.0
    ui: bool = True

    def __post_init__(self) -> None:
        if any(not key.strip() for key in self.api_keys):
            raise ConfigError(
                "an API key is empty: auth would look on while the bare header 'Authorization: Bearer' passed",
                fix="pass --api-key a non-empty key (a variable that is unset gives an empty one)",
            )
        if any(not key.isprintable() or " " in key for key in self.api_keys):
            raise ConfigError("an API key contains spaces or control characters", fix="use keys of visible characters")
        if self.max_documents > self.queue.max_queue_pairs:
            # Every document is one window at least.
            raise ConfigError(
                f"max_documents ({self.max_documents}) is more than max_queue_pairs ({self.queue.max_queue_pairs}):"
                " the largest allowed request could never be queued behind another",
                fix="raise --max-queue-pairs or lower --max-documents",
            )

    @classmethod
    def from_settings(cls, settings: Settings, *, api_keys: tuple[str, ...] = ()) -> ServerOptions:
        """Options from ``CROSSRANK_*`` settings; ``api_keys`` (from flags) are added to ``CROSSRANK_API_KEY``'s."""
        return cls(
            model_name=settings.served_model_name or public_model_name(settings.model),
            api_keys=(*_keys(settings.api_key), *api_keys),
            queue=QueueOptions(
                max_wait_ms=settings.max_wait_ms,
                max_queue_pairs=settings.max_queue_pairs,
                max_queue_tokens=settings.max_queue_tokens,
                max_request_tokens=settings.max_request_tokens,
                max_request_seconds=REQUEST_SECONDS,
                max_batch_requests=settings.max_batch_requests,
            ),
            max_documents=settings.max_documents,
            max_document_chars=settings.max_document_chars,
            max_query_chars=settings.max_query_chars,
            max_body_bytes=settings.max_body_bytes,
            slow_ms=settings.slow_ms,
            cors_origins=_split(settings.cors_origins),
            body_timeout=settings.body_timeout,
            ui=settings.ui,
        )
