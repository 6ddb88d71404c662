"""``dtype="auto"`` on a CPU: the precision measured fastest on this machine for the model's shape, within the gate.

No rule on CPU flags can choose: bfloat16 ran 3x faster than float32 on an AMD Zen 4 (AVX-512-BF16, no AMX) and
0.6x as fast on an Intel Xeon with the same flags (BENCHMARKS.md). So the first load of a model shape on a CPU times
the modes the model's family may run (``TorchBackend`` times one encoder layer of the model's own shape, a few
seconds at most) and keeps the fastest; the decision is cached in ``~/.cache/crossrank/cpu-precision``, one JSON
file per key (CPU model and flags, torch threads, torch version, the model's shape), so later loads decide at once.
ONNX int8 is not a candidate: it is another backend, chosen with ``backend="onnx", quantize="int8"``.

This module holds the decision, its key and its cache; it imports no torch, so ``/info`` and ``doctor`` can read it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from crossrank.backends.cpu import cpu_flags, cpu_model
from crossrank.config import cache_folder

__all__ = [
    "CPU_MODES",
    "GATED_MODES",
    "CpuModeDecision",
    "cached_decisions",
    "choose_mode",
    "cpu_mode_of",
    "decide",
    "decision_folder",
    "decision_key",
]

_log = logging.getLogger(__name__)

# Each mode as ``Backend.dtype`` names it: float32 weights under bfloat16 autocast (softmax, LayerNorm and GELU
# stay float32), and bfloat16 weights.
CPU_MODES = ("float32", "bfloat16-autocast", "bfloat16")
# The reduced modes ``auto`` may run, by ``config.model_type``: those whose accuracy gate was measured and passed
# (Spearman rho >= 0.99 with float32, NDCG@10 within 0.5 points, keyword-trap top-1 kept; BENCHMARKS.md, "bfloat16
# accuracy gate"). XLM-R (bge-reranker-v2-m3) runs the same encoder-layer math as BERT; see the reasoning there.
GATED_MODES: dict[str, frozenset[str]] = {
    "bert": frozenset({"bfloat16-autocast", "bfloat16"}),
    "xlm-roberta": frozenset({"bfloat16-autocast", "bfloat16"}),
}
# A reduced mode must beat float32 by this factor: below it the gain is within timing noise on a busy machine
# and not worth scores that differ from float32's.
MIN_SPEEDUP = 1.15
# Bumped when the measurement changes, so that decisions made by an older one are measured again.
_PROBE_VERSION = 1


@dataclass(frozen=True, slots=True)
class CpuModeDecision:
    """What ``dtype="auto"`` runs on this CPU for one model shape, and why.

    Attributes:
        mode: one of ``CPU_MODES``.
        speedups: each timed mode's speed as a multiple of float32's (``{}`` where nothing was timed).
        source: ``measured`` (now; cached for later loads), ``measured on a busy CPU, not cached``, ``cached``
            (an earlier measurement) or ``not gated`` (the family may only run float32: nothing timed).
        seconds: how long the measurement took.
        key: what the decision holds for (CPU, threads, torch version, model shape).
    """

    mode: str
    speedups: dict[str, float]
    source: str
    seconds: float = 0.0
    key: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: the mode, where the decision came from and the measured ratios."""
        ratios = ", ".join(f"{mode} {ratio:.2f}x" for mode, ratio in self.speedups.items() if mode != "float32")
        return f"{self.mode} ({self.source}{'; ' + ratios + ' float32' if ratios else ''})"

    def model(self) -> str:
        """The model shape decided for, e.g. ``xlm-roberta 1024/4096`` (hidden/intermediate size)."""
        shape = self.key.get("shape", {})
        return f"{shape.get('model_type')} {shape.get('hidden_size')}/{shape.get('intermediate_size')}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for ``/info``, ``crossrank bench`` results and the cache file."""
        return asdict(self)


# Decisions read or made in this process, by (folder, key digest): each is logged once.
_decided: dict[tuple[str, str], CpuModeDecision] = {}


def choose_mode(seconds: Mapping[str, float], allowed: Collection[str]) -> str:
    """The fastest of the timed modes ``allowed`` (float32 always is) that beats float32 by ``MIN_SPEEDUP``.

    ``seconds``: each timed mode's best time for the same work, float32's among them.
    """
    base = seconds["float32"]
    candidates = [m for m in CPU_MODES if m in seconds and m in allowed and base / seconds[m] >= MIN_SPEEDUP]
    return min(candidates, key=lambda m: seconds[m], default="float32")


def decision_key(
    shape: Mapping[str, Any],
    *,
    threads: int,
    torch_version: str,
    cpu: str | None = None,
    flags: Collection[str] | None = None,
) -> dict[str, Any]:
    """What a measured decision holds for: the CPU (model and flags; this one's by default), the threads torch
    uses, torch's version and the model's shape (``model_type``, hidden and intermediate sizes, heads)."""
    flags = sorted(cpu_flags() if flags is None else flags)
    return {
        "cpu": cpu_model() if cpu is None else cpu,
        "flags": hashlib.sha256(" ".join(flags).encode()).hexdigest()[:16],
        "threads": threads,
        "torch": torch_version,
        "shape": dict(shape),
        "probe": _PROBE_VERSION,
    }


def decision_folder() -> Path | None:
    """Where decisions are cached (``~/.cache/crossrank/cpu-precision``); ``None`` without a home folder."""
    try:
        return cache_folder("cpu-precision")
    except RuntimeError:
        return None


def _digest(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def _read(path: Path, key: Mapping[str, Any]) -> CpuModeDecision | None:
    """The cached decision for ``key``; ``None`` where there is none or the file is unreadable or not one of ours
    (it is then measured again and rewritten)."""
    try:
        entry = json.loads(path.read_text())
        if entry["key"] != key or entry["mode"] not in CPU_MODES:
            return None
        speedups = {str(mode): float(ratio) for mode, ratio in entry["speedups"].items()}
        return CpuModeDecision(entry["mode"], speedups, "cached", float(entry["seconds"]), dict(key))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        if path.exists():
            _log.warning("ignoring the unreadable CPU precision decision %s (%s); measuring again", path.name, exc)
        return None


def _write(path: Path, decision: CpuModeDecision) -> None:
    """Atomically (a temporary file renamed over it), so concurrent processes never read half a file; a folder
    that cannot be written leaves the decision uncached (measured again next time)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(handle, "w") as file:
                json.dump({**decision.as_dict(), "source": "measured"}, file, indent=1)
            os.replace(temporary, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
    except OSError as exc:
        _log.warning("could not cache the CPU precision decision in %s (%s)", path.parent, exc)


def decide(
    key: dict[str, Any],
    allowed: Collection[str],
    measure: Callable[[list[str]], dict[str, float]],
    *,
    busy: bool = False,
) -> CpuModeDecision:
    """The mode ``dtype="auto"`` runs for ``key``: from this process's memory, the cache (``decision_folder()``),
    or measured.

    Args:
        key: from ``decision_key``.
        allowed: the reduced modes the model's family passed the accuracy gate in (``GATED_MODES``).
        measure: times the modes it is given on the model's shape; returns each one's best seconds.
        busy: other work was keeping the CPU busy: a measurement is kept for this process only, not cached.
    """
    if not allowed:
        return CpuModeDecision("float32", {}, "not gated", key=key)
    digest, folder = _digest(key), decision_folder()
    remembered = _decided.get((str(folder), digest))
    if remembered is not None:
        return remembered
    path = None if folder is None else folder / f"{digest}.json"
    decision = None if path is None else _read(path, key)
    if decision is None:
        started = time.perf_counter()
        seconds = measure(["float32", *(m for m in CPU_MODES if m in allowed)])
        speedups = {mode: round(seconds["float32"] / s, 3) for mode, s in seconds.items()}
        source = "measured on a busy CPU, not cached" if busy else "measured"
        decision = CpuModeDecision(
            choose_mode(seconds, allowed), speedups, source, round(time.perf_counter() - started, 3), key
        )
        if path is not None and not busy:
            _write(path, decision)
    _log.info("dtype='auto' on this CPU: %s", decision.summary())
    _decided[(str(folder), digest)] = decision
    return decision


def cached_decisions() -> list[CpuModeDecision]:
    """Every readable decision cached on this machine (for ``crossrank doctor``), newest first."""
    folder = decision_folder()
    if folder is None or not folder.is_dir():
        return []
    decisions = []
    for path in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
            decisions.append(_read(path, json.loads(path.read_text())["key"]))
    return [d for d in decisions if d is not None]


def cpu_mode_of(backend: object) -> dict[str, Any] | None:
    """The decision a loaded backend runs (through wrappers), JSON-ready; ``None`` where ``auto`` measured nothing
    (a GPU, another backend, or a dtype given explicitly)."""
    while backend is not None:
        decision = getattr(backend, "cpu_mode", None)
        if isinstance(decision, CpuModeDecision):
            return decision.as_dict()
        backend = getattr(backend, "inner", None)
    return None
