"""``dtype="auto"`` on a CPU: the precision measured fastest on this machine for the model's shape, within the gate.

No rule on CPU flags can choose: bfloat16 ran 3x faster than float32 on an AMD Zen 4 (AVX-512-BF16, no AMX) and
0.6x as fast on an Intel Xeon with the same flags (BENCHMARKS.md). So the first load of a model shape on a CPU times
the modes the backend and the model's family may run on one encoder layer of the model's own shape (a few seconds
at most) and keeps the fastest; the decision is cached in ``~/.cache/crossrank/cpu-precision``, one JSON file per
key (CPU model and flags, threads, the runtime's version, the model's shape), so later loads decide at once.
The torch backend's modes are float32 and two bfloat16 modes (``TorchBackend``); the ONNX backend's, float32 and
int8 (``backends/onnx_probe.py``): int8 is a candidate only where the user chose ``backend="onnx"``.

This module holds the decision, its key, its cache and the alternating timer; it imports no torch, so ``/info``
and ``doctor`` can read it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from crossrank.backends.cpu import cpu_flags, cpu_model
from crossrank.paths import cache_folder

__all__ = [
    "CPU_MODES",
    "GATED_MODES",
    "NO_BFLOAT16",
    "ONNX_MODES",
    "PROBE_BUDGET",
    "PROBE_LENGTH",
    "PROBE_TOKENS",
    "CpuModeDecision",
    "cached_decisions",
    "choose_mode",
    "cpu_mode_of",
    "decide",
    "decision_folder",
    "decision_key",
    "gated",
    "machine_busy",
    "time_alternating",
]

_log = logging.getLogger(__name__)

# Each mode as ``Backend.dtype`` names it. The torch backend's: float32, float32 weights under bfloat16 autocast
# (softmax, LayerNorm and GELU stay float32), and bfloat16 weights. The ONNX backend's: float32, and int8 weights
# (dynamic int8, each pair run alone).
CPU_MODES = ("float32", "bfloat16-autocast", "bfloat16")
ONNX_MODES = ("float32", "int8")
_ALL_MODES = tuple(dict.fromkeys((*CPU_MODES, *ONNX_MODES)))
# The reduced modes ``auto`` may run, by ``config.model_type``: those whose accuracy gate was measured and passed
# (Spearman rho >= 0.99 with float32, NDCG@10 within 0.5 points, keyword-trap top-1 kept; BENCHMARKS.md, "bfloat16
# accuracy gate" and "int8 accuracy gate"). XLM-R (bge-reranker-v2-m3) runs the same encoder-layer math as BERT,
# which bfloat16 rounds alike (see the reasoning there); int8 is not allowed for it by that argument: its margin
# on BERT is thin (rho 0.9967), and 24 layers of width 1024 may not keep it, so it waits for real weights.
GATED_MODES: dict[str, frozenset[str]] = {
    "bert": frozenset({"bfloat16-autocast", "bfloat16", "int8"}),
    "xlm-roberta": frozenset({"bfloat16-autocast", "bfloat16"}),
}
# The probe: one encoder layer on this many tokens, in rows of this length (a model's positions permitting), for
# at most this many rounds or seconds (see time_alternating).
PROBE_TOKENS = 1024
PROBE_LENGTH = 256
PROBE_ROUNDS = 5
PROBE_BUDGET = 3.0
# A reduced mode must beat float32 by this factor: below it the gain is within timing noise on a busy machine
# and not worth scores that differ from float32's.
MIN_SPEEDUP = 1.15
# The source of a torch decision on a CPU without bfloat16 instructions (``cpu.bfloat16_instructions``).
NO_BFLOAT16 = "not timed: no bfloat16 instructions on this CPU"
# Bumped when the measurement changes, so that decisions made by an older one are measured again.
_PROBE_VERSION = 1


@dataclass(frozen=True, slots=True)
class CpuModeDecision:
    """What ``dtype="auto"`` runs on this CPU for one model shape, and why.

    Attributes:
        mode: one of ``CPU_MODES`` (torch) or ``ONNX_MODES``.
        speedups: each timed mode's speed as a multiple of float32's (``{}`` where nothing was timed).
        source: ``measured`` (now; cached for later loads), ``measured on a busy CPU, not cached``, ``cached``
            (an earlier measurement), ``not gated`` (the family may only run float32: nothing timed),
            ``NO_BFLOAT16`` (the CPU has no bfloat16 instructions: nothing timed) or ``not measured (...)`` (the
            measurement could not run: float32, for this process only).
        seconds: how long the measurement took.
        key: what the decision holds for (CPU, threads, the runtime and its version, model shape).
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

    def runtime(self) -> str:
        """What the decision was measured in: ``torch`` or ``onnxruntime`` (``decision_key``'s ``runtime``)."""
        return "onnxruntime" if "onnxruntime" in self.key else "torch"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for ``/info``, ``crossrank bench`` results and the cache file."""
        return asdict(self)


# Decisions read or made in this process, by (folder, key digest): each is logged once.
_decided: dict[tuple[str, str], CpuModeDecision] = {}


def gated(model_type: str, modes: Collection[str]) -> tuple[str, ...]:
    """The reduced ``modes`` (a backend's) that ``auto`` may run for ``model_type``, in the order given."""
    allowed = GATED_MODES.get(model_type, frozenset())
    return tuple(mode for mode in modes if mode != "float32" and mode in allowed)


def choose_mode(seconds: Mapping[str, float], allowed: Collection[str]) -> str:
    """The fastest of the timed modes ``allowed`` (float32 always is) that beats float32 by ``MIN_SPEEDUP``.

    ``seconds``: each timed mode's best time for the same work, float32's among them.
    """
    base = seconds["float32"]
    candidates = [m for m in seconds if m in allowed and base / seconds[m] >= MIN_SPEEDUP]
    return min(candidates, key=lambda m: seconds[m], default="float32")


def decision_key(
    shape: Mapping[str, Any],
    *,
    threads: int,
    runtime: Mapping[str, str],
    cpu: str | None = None,
    flags: Collection[str] | None = None,
) -> dict[str, Any]:
    """What a measured decision holds for: the CPU (model and flags; this one's by default), the threads the
    runtime uses, the runtime and its version (``{"torch": "2.13.0+cpu"}``, ``{"onnxruntime": "1.32.0"}``) and
    the model's shape (``model_type``, hidden and intermediate sizes, heads)."""
    flags = sorted(cpu_flags() if flags is None else flags)
    return {
        "cpu": cpu_model() if cpu is None else cpu,
        "flags": hashlib.sha256(" ".join(flags).encode()).hexdigest()[:16],
        "threads": threads,
        **runtime,
        "shape": dict(shape),
        "probe": _PROBE_VERSION,
    }


def machine_busy() -> bool:
    """Whether other work keeps this CPU busier than its cores (the 1-minute load average): everything times slow
    and unevenly then, so a decision measured now holds for this process only."""
    return os.getloadavg()[0] > (os.cpu_count() or 1) if hasattr(os, "getloadavg") else False


def time_alternating(runs: Mapping[str, Callable[[], object]], budget: float = PROBE_BUDGET) -> dict[str, float]:
    """Each mode's best seconds for its run (the same work in each mode). After one warm-up run each (kernels
    chosen, workspaces made), the modes alternate round by round, so a neighbour's load weighs on all alike, for
    ``PROBE_ROUNDS`` rounds or until ``budget`` seconds have passed since the warm-up began (the first round always
    completes). A mode whose warm-up fails (a build without its kernels for this CPU) is not a candidate.
    """
    started = time.perf_counter()
    usable = []
    for mode, run in runs.items():
        try:
            run()
            usable.append(mode)
        except RuntimeError as exc:  # torch's and onnxruntime's kernel errors
            _log.warning("dtype='auto' cannot time %s on this CPU (%s); not a candidate", mode, exc)
    best = dict.fromkeys(usable, math.inf)
    for _ in range(PROBE_ROUNDS):
        for mode in usable:
            began = time.perf_counter()
            runs[mode]()
            best[mode] = min(best[mode], time.perf_counter() - began)
        if time.perf_counter() - started > budget:
            break
    return best


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
        if entry["key"] != key or entry["mode"] not in _ALL_MODES:
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
    untimed: str = "not gated",
) -> CpuModeDecision:
    """The mode ``dtype="auto"`` runs for ``key``: from this process's memory, the cache (``decision_folder()``),
    or measured.

    Args:
        key: from ``decision_key``.
        allowed: the backend's reduced modes the model's family passed the accuracy gate in (``gated``) and this
            CPU can run.
        measure: times the modes it is given on the model's shape; returns each one's best seconds.
        busy: other work was keeping the CPU busy: a measurement is kept for this process only, not cached.
        untimed: the decision's source where nothing is ``allowed``: float32, nothing timed.
    """
    if not allowed:
        untimed_decision = CpuModeDecision("float32", {}, untimed, key=key)
        _log.info("dtype='auto' on this CPU: %s", untimed_decision.summary())
        return untimed_decision
    digest, folder = _digest(key), decision_folder()
    remembered = _decided.get((str(folder), digest))
    if remembered is not None:
        return remembered
    path = None if folder is None else folder / f"{digest}.json"
    decision = None if path is None else _read(path, key)
    if decision is None:
        started = time.perf_counter()
        seconds = measure([m for m in _ALL_MODES if m == "float32" or m in allowed])
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
