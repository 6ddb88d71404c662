"""Backend names to implementations, imported lazily so unused runtimes cost nothing."""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Protocol

from crossrank.backends.base import Backend, TokenHead
from crossrank.config import RuntimeOptions
from crossrank.errors import BackendUnavailableError, ConfigError

__all__ = ["BACKENDS", "load_backend"]


class _BackendFactory(Protocol):
    def __call__(
        self,
        model_dir: Path,
        *,
        runtime: RuntimeOptions,
        allow_pickle: bool,
        trust_remote_code: bool,
        model_digest: str,
    ) -> Backend: ...


# name -> (module, class, the extra that installs its runtime)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "torch": ("crossrank.backends.torch", "TorchBackend", "torch"),
    "onnx": ("crossrank.backends.onnx", "OnnxBackend", "onnx"),
    # Token-overlap scores without a model, for tests and demos; needs nothing beyond numpy.
    "fake": ("crossrank.backends.fake", "FakeBackend", ""),
}
# Decoder rerankers (a TokenHead): the torch backend's causal-LM runner; the fake backend scores them as any pair.
_DECODERS: dict[str, tuple[str, str, str]] = {
    "torch": ("crossrank.backends.decoder", "DecoderBackend", "torch"),
    "fake": BACKENDS["fake"],
}


def load_backend(
    name: str,
    model_dir: Path,
    *,
    runtime: RuntimeOptions,
    allow_pickle: bool,
    trust_remote_code: bool,
    model_digest: str,
    head: TokenHead | None = None,
) -> Backend:
    """Load ``model_dir`` with the backend called ``name``; ``model_digest`` identifies its files (models/identity);
    ``head`` is a decoder reranker's, ``None`` for a cross-encoder."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}", fix=f"choose one of: {', '.join(sorted(BACKENDS))}")
    if head is not None and name not in _DECODERS:
        raise ConfigError(
            f"backend {name!r} runs cross-encoders; decoder (LLM) rerankers run on {', '.join(sorted(_DECODERS))}",
            fix="pass backend='torch' for this model",
        )
    module_name, class_name, extra = (_DECODERS if head is not None else BACKENDS)[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailableError(
            f"backend {name!r} needs a package that is not installed ({exc.name})",
            fix=f"pip install 'crossrank[{extra}]'",
        ) from exc
    factory: _BackendFactory = getattr(module, class_name)
    if head is not None and name == "torch":
        factory = functools.partial(getattr(module, class_name), head=head)
    return factory(
        model_dir,
        runtime=runtime,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        model_digest=model_digest,
    )
