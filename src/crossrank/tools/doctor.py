"""``crossrank doctor``: one report on everything that makes a reranker deployment fail, each with its fix.

Versions and known-bad combinations, CUDA and the driver, each GPU's memory and the processes holding
it, CPU features and threads, conflicting installs, the hub cache and disk, the model folder's checks,
and finally a live smoke test (load, score two pairs, time it). The exit code is the worst finding.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossrank._version import __version__
from crossrank.backends.cpu_mode import CpuModeDecision, cached_decisions, cpu_mode_of
from crossrank.backends.diagnostics import TorchFacts, torch_facts
from crossrank.backends.gpu import NvmlReport, nvml_report
from crossrank.backends.placement import count_parameters, needed_bytes
from crossrank.errors import CrossrankError
from crossrank.families import AUTO, Family
from crossrank.models.resolve import is_hub_id
from crossrank.models.verify import STATUS_ORDER, Check, Status, verify_model, worst
from crossrank.reranker import Reranker
from crossrank.tools.environment import (
    check_conflicts,
    check_cpu,
    check_cuda,
    check_disk,
    check_gpus,
    check_hub,
    check_packages,
    check_python,
    check_threads,
    probe_hub,
)

__all__ = ["EXIT_CODES", "DoctorReport", "run_doctor"]

EXIT_CODES: dict[Status, int] = {"ok": 0, "warn": 1, "fail": 2}
# Names that end like these are files someone meant to pass elsewhere, never model ids.
_FILE_SUFFIXES = {".txt", ".json", ".jsonl", ".ndjson", ".csv", ".tsv", ".parquet", ".md", ".safetensors", ".bin"}
_PASS_A_FOLDER = "pass the folder that holds config.json and the weights, or a hub id such as BAAI/bge-reranker-v2-m3"
_SMOKE = (
    ("what is a panda?", "The giant panda is a bear species endemic to China."),
    ("what is a panda?", "The stock market rose sharply today."),
)


@dataclass(frozen=True, slots=True)
class DoctorReport:
    """Every finding, in the order checked, and the facts behind them (for ``--json``)."""

    checks: list[Check]
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> Status:
        return worst(self.checks)

    @property
    def exit_code(self) -> int:
        """0 when all is ok, 1 when the worst finding is a warning, 2 when something fails."""
        return EXIT_CODES[self.status]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``status``, ``exit_code``, ``checks`` (name, status, detail, fix, error), ``facts``."""
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "checks": [
                {"name": c.name, "status": c.status, "detail": c.detail, "fix": c.fix, "error": c.error}
                for c in self.checks
            ],
            "facts": self.facts,
        }


def _hub_id_shaped(name: str) -> bool:
    """``org/name`` as the hub spells model ids, and not a data file's name (``data/docs.txt``)."""
    return "/" in name and is_hub_id(name) and Path(name).suffix.lower() not in _FILE_SUFFIXES


def _model_folder(
    model: str, revision: str | None, cache_dir: str | None, reachable: bool | None
) -> tuple[Path | None, Check | None]:
    """The local folder of ``model`` without downloading it, or a failure saying why there is none.

    A model that is missing is a failure, not a warning: it is the model the user named, or the default one, and
    every command that uses it fails until it is there (``reachable``: whether the hub could be reached to fetch
    it; ``None`` when that was not checked).
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve(), None
    if path.exists():
        return None, Check("model", "fail", f"{path.resolve()} is a file, not a model folder", _PASS_A_FOLDER)
    if not (path.is_absolute() or model.startswith((".", "~")) or model.count("/") > 1):
        from crossrank.models.download import cached_snapshot

        folder = cached_snapshot(model, revision=revision, cache_dir=cache_dir)
        if folder is not None:
            return folder, None
    if _hub_id_shaped(model):
        download = f"crossrank download {model}" + (f" --revision {revision}" if revision else "")
        if reachable is False:
            consequence = "and the hub cannot be reached from here, so every command that uses it fails"
        else:
            consequence = "so every command that uses it downloads it first, and fails where the hub is out of reach"
        return None, Check("model", "fail", f"{model} is not in the hub cache, {consequence}", download)
    return None, Check("model", "fail", f"no model folder at {path.resolve()}", _PASS_A_FOLDER)


def _describe(family: Family) -> str:
    """How a model of ``family`` is scored, for the report (the score head itself is verify's finding)."""
    if not family.decoder:
        return f"cross-encoder: {family.source}"
    instruction = (
        f"default instruction {family.default_instruction!r}"
        if family.default_instruction
        else "no instruction by default"
    )
    return (
        f"{family.name}, a decoder (LLM) reranker as in {family.source}; {instruction} (--instruction); "
        "run natively (no code from the checkpoint)"
    )


def _smoke(folder: Path, device: str, dtype: str, fallback: str, family: str) -> Check:
    started = time.perf_counter()
    try:
        with Reranker(str(folder), device=device, dtype=dtype, fallback=fallback, family=family) as reranker:  # type: ignore[arg-type]
            load = time.perf_counter() - started
            reranker.score(list(_SMOKE[:1]))  # warm-up: first-call allocations are not per-pair latency
            started = time.perf_counter()
            relevant, irrelevant = reranker.score(list(_SMOKE))
            ms = 1000 * (time.perf_counter() - started)
            where = f"{reranker.device} {reranker.dtype}"
            measured = cpu_mode_of(reranker.scorer.backend)
            if measured is not None:  # dtype="auto" on CPU: what it chose, and from what
                where = f"{reranker.device} {CpuModeDecision(**measured).summary()} by dtype='auto'"
    except CrossrankError as error:
        return Check("smoke", "fail", f"loading or scoring failed: {error.message}", error.fix, type(error).__name__)
    detail = (
        f"loaded in {load:.2f} s on {where}; 2 pairs in {ms:.1f} ms (relevant {relevant:.3f}, other {irrelevant:.3f})"
    )
    if not relevant > irrelevant:
        return Check(
            "smoke",
            "warn",
            f"{detail}: the relevant document did not score higher",
            "check it is a trained reranker, not a base or embedding model (crossrank check tells more)",
        )
    return Check("smoke", "ok", detail)


def _facts(torch: TorchFacts, nvml: NvmlReport) -> dict[str, Any]:
    return {
        "torch": {
            "version": torch.version,
            "cuda_build": torch.cuda_build,
            "cuda_available": torch.cuda_available,
            "cpu_capability": torch.cpu_capability,
            "threads": torch.threads,
            "error": torch.error,
        },
        "nvml": {
            "available": nvml.available,
            "reason": nvml.reason,
            "driver_version": nvml.driver_version,
            "cuda_driver_version": nvml.cuda_driver_version,
            "gpus": [
                {
                    "index": g.index,
                    "name": g.name,
                    "total_bytes": g.total_bytes,
                    "free_bytes": g.free_bytes,
                    "processes": [{"pid": p.pid, "name": p.name, "used_bytes": p.used_bytes} for p in g.processes],
                }
                for g in nvml.gpus
            ],
        },
    }


def run_doctor(
    *,
    model: str | None,
    environ: Mapping[str, str],
    revision: str | None = None,
    cache_dir: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    fallback: str = "none",
    num_threads: int | None = None,
    family: str = AUTO,
    smoke: bool = True,
    network: bool = True,
) -> DoctorReport:
    """Run every check; ``model=None`` skips the model and smoke checks.

    Args:
        model: hub id or folder to check (a hub id is only looked up in the cache, never downloaded).
        environ: the environment variables (the CLI passes ``os.environ``).
        family: how the model is scored (``auto``: detected; a decoder reranker renamed by a fine-tune needs it).
        smoke: load the model and score two pairs at the end.
        network: ask the hub whether it can be reached (a HEAD request, ``HUB_TIMEOUT`` seconds at most); when
            ``False``, or with ``HF_HUB_OFFLINE``, the report says it was not checked.
    """
    from crossrank.models.download import hub_facts

    torch, nvml = torch_facts(), nvml_report()
    hub = hub_facts()
    checks = [*check_python(), *check_packages(__version__), *check_conflicts(environ), *check_cuda(torch, nvml)]
    [hub_check] = check_hub(hub.endpoint, hub.offline, probe_hub if network else None)
    folder: Path | None = None
    if model is not None:
        reachable = False if hub.offline or hub_check.status != "ok" else (True if network else None)
        folder, missing = _model_folder(model, revision, cache_dir, reachable)
        if missing is not None:
            checks.append(missing)
    half = "float16" if dtype == "auto" else dtype
    need = needed_bytes(count_parameters(folder), half) if folder is not None else None
    checks += check_gpus(nvml, need, half)
    checks += [*check_cpu(torch), *check_threads(torch, environ, num_threads)]
    checks += [*check_disk(Path(cache_dir) if cache_dir else hub.cache_dir), hub_check]
    if folder is not None:
        report = verify_model(folder, family=family)
        checks += [Check(f"model {c.name}", c.status, c.detail, c.fix, c.error) for c in report.checks]
        if report.family is not None:
            checks.append(Check("model family", "ok", _describe(report.family)))
        loadable = all(STATUS_ORDER[c.status] < STATUS_ORDER["fail"] for c in report.checks)
        if smoke and loadable and not torch.error:
            checks.append(_smoke(folder, device, dtype, fallback, family))
    facts = _facts(torch, nvml)
    facts["hub"] = {"cache_dir": str(hub.cache_dir), "offline": hub.offline, "endpoint": hub.endpoint}
    facts["model"] = {"name": model, "folder": None if folder is None else str(folder)}
    facts["cpu_precision"] = [decision.as_dict() for decision in cached_decisions()]
    return DoctorReport(checks, facts)
