"""Typed errors of crossrank, each with a human message and, where there is one, the fix.

The tree::

    CrossrankError
    ├── ConfigError                 bad options or flags
    ├── InputError                  bad query/documents (the server answers 4xx)
    │   ├── DataFormatError         a malformed line in an evaluation data file (names file and line)
    │   └── LimitExceededError      a request over a configured size limit (the server answers 413)
    │   └── InputTooLongError       a query or document over its token limit where cutting is refused
    ├── ModelError
    │   ├── ModelNotFoundError      no such local folder, not cached, not on the hub
    │   ├── IntegrityError          files present but broken (missing parts, unreadable)
    │   │   └── IncompleteModelError    a download stopped part-way (truncated file, .incomplete, missing file)
    │   └── UnsupportedModelError   not a one-label sequence classifier, or unsafe weights
    │       └── WeightsFormatError      weights in a format crossrank does not run (TF, Keras, GGUF, ONNX, pickle)
    ├── BackendError
    │   ├── BackendUnavailableError the runtime's extra is not installed
    │   ├── ExportMemoryError       too little free memory to make the ONNX export (checked before it starts)
    │   └── InferenceError          the runtime failed while scoring
    │       └── DeviceMemoryError       the GPU ran out of memory and no fallback was allowed
    └── OverloadedError             too much queued work

Every error renders as ``message`` followed by ``Fix: ...`` when a fix is known, so the
CLI and the server can show one text and users never need the traceback.

``TruncationWarning`` (a ``UserWarning``, not an error) is issued when a query is cut to its cap.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendUnavailableError",
    "ConfigError",
    "CrossrankError",
    "DataFormatError",
    "DeviceMemoryError",
    "ExportMemoryError",
    "IncompleteModelError",
    "InferenceError",
    "InputError",
    "InputTooLongError",
    "IntegrityError",
    "LimitExceededError",
    "ModelError",
    "ModelNotFoundError",
    "OverloadedError",
    "TruncationWarning",
    "UnsupportedModelError",
    "WeightsFormatError",
]


class CrossrankError(Exception):
    """Root of every error crossrank raises on purpose."""

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return self.message if self.fix is None else f"{self.message}\nFix: {self.fix}"


class ConfigError(CrossrankError):
    """An option has a value crossrank cannot work with."""


class InputError(CrossrankError):
    """The query or documents break a limit or a rule."""


class DataFormatError(InputError):
    """A data file (corpus, queries, qrels, candidates, results) has a malformed line."""

    def __init__(self, path: str, line: int | None, problem: str, *, fix: str | None = None) -> None:
        where = path if line is None else f"{path}:{line}"
        super().__init__(f"{where}: {problem}", fix=fix)
        self.path = path
        self.line = line


class LimitExceededError(InputError):
    """A request is bigger than a configured limit (documents, characters, bytes, tokens)."""

    def __init__(self, field: str, value: int, limit: int, *, unit: str, fix: str | None = None) -> None:
        super().__init__(f"{field}: {value} {unit} is more than the limit of {limit}", fix=fix)
        self.field = field
        self.value = value
        self.limit = limit


class InputTooLongError(InputError):
    """A query or document has more tokens than its limit and cutting it was refused.

    Attributes:
        field: what is too long: ``query`` or ``documents[i]`` (the index in the caller's list).
        tokens: its length in the model's tokens.
        limit: the most tokens that could be read (the server answers 413 with both).
    """

    def __init__(self, field: str, tokens: int, limit: int, *, reason: str, fix: str | None = None) -> None:
        super().__init__(f"{field} has {tokens} tokens, more than the {limit} {reason}", fix=fix)
        self.field = field
        self.tokens = tokens
        self.limit = limit


class TruncationWarning(UserWarning):
    """Text was cut to fit a limit (a query over its cap); the result reads less than was sent."""


class ModelError(CrossrankError):
    """The model cannot be found or used."""


class ModelNotFoundError(ModelError):
    """No model at the given name or path."""


class IntegrityError(ModelError):
    """The model folder is there but broken."""


class IncompleteModelError(IntegrityError):
    """A download stopped part-way: a truncated or missing file, or an ``.incomplete`` leftover."""


class UnsupportedModelError(ModelError):
    """The model is not a cross-encoder crossrank can run safely."""


class WeightsFormatError(UnsupportedModelError):
    """The weights are in a format crossrank does not load (TensorFlow, Keras, GGUF, ONNX, or pickle unasked)."""


class BackendError(CrossrankError):
    """The runtime that executes the model failed."""


class BackendUnavailableError(BackendError):
    """The runtime's optional dependency is not installed."""


class ExportMemoryError(BackendError):
    """Making the ONNX export needs more memory than is available; raised before the export starts.

    Attributes:
        needed: bytes the export needs at its peak.
        available: bytes available when it was checked.
    """

    def __init__(self, needed: int, available: int) -> None:
        super().__init__(
            f"the ONNX export of this model needs about {needed / 1e9:.1f} GB of free memory; "
            f"{available / 1e9:.1f} GB is available",
            fix="free memory, or make the export on a machine with more (same CPU kind and library versions, same "
            "model path) and copy the model folder's .crossrank/onnx-* folder here, or use backend='torch'",
        )
        self.needed = needed
        self.available = available


class InferenceError(BackendError):
    """Scoring failed inside the runtime."""


class DeviceMemoryError(InferenceError):
    """The accelerator ran out of memory even for a single pair, and CPU fallback was not allowed."""


class OverloadedError(CrossrankError):
    """More work is queued than the configured bound allows; ``retry_after`` estimates when it drains."""

    def __init__(self, message: str, *, retry_after: int, fix: str | None = None) -> None:
        super().__init__(message, fix=fix)
        self.retry_after = retry_after
