"""Where crossrank keeps what it builds for itself: the one place that knows, and reads ``XDG_CACHE_HOME``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_folder"]


def cache_folder(name: str) -> Path:
    """``$XDG_CACHE_HOME/crossrank/<name>`` (``~/.cache`` where that is unset or not absolute, as the XDG spec says
    and pip and huggingface_hub do): what crossrank builds for itself (tokenizers, ONNX exports of models in
    read-only folders, dtype="auto"'s decisions, the m3-shaped model). Raises ``RuntimeError`` where there is no
    home folder to fall back on."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "crossrank" / name
