"""TorchBackend: a Hugging Face sequence classifier run by PyTorch (the only torch importer).

It recovers by itself where that is safe: a CUDA out-of-memory batch is split in halves down to one
pair (and later batches are pre-split under the lowered token budget); one pair that still does not
fit runs on CPU when ``fallback="cpu"``, else ``DeviceMemoryError`` names the free memory and the
processes holding the rest. A half-precision batch whose scores overflow is recomputed in float32.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from crossrank.backends.base import EncodedBatch
from crossrank.backends.cpu import bfloat16_instructions, cpu_flags
from crossrank.backends.cpu_mode import (
    CPU_MODES,
    NO_BFLOAT16,
    PROBE_BUDGET,
    PROBE_LENGTH,
    PROBE_TOKENS,
    CpuModeDecision,
    decide,
    decision_key,
    gated,
    machine_busy,
    time_alternating,
)
from crossrank.backends.gpu import describe_processes, nvml_report
from crossrank.backends.placement import (
    GpuMemory,
    activation_bytes_per_token,
    choose_placement,
    count_parameters,
    gpu_batching,
    min_pass_tokens,
    needed_bytes,
    stored_dtype,
)
from crossrank.backends.weights import cast_state_dict, quiet_loading
from crossrank.config import BatchingOptions, RuntimeOptions
from crossrank.errors import ConfigError, DeviceMemoryError, InferenceError, IntegrityError, UnsupportedModelError

__all__ = ["RecoveryStats", "TorchBackend", "measured_cpu_mode", "time_cpu_modes"]

_log = logging.getLogger(__name__)


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_GIB = 2**30
# The passes timed on a GPU for BatchingOptions.min_pass_tokens: pairs of this many tokens (any token id
# but padding), one pair and as many as make this many tokens (within the memory budget), alternated.
_PROBE_LENGTH = 128
_PROBE_TOKENS = 16384
_PROBE_TOKEN_ID = 5
_PROBE_ROUNDS = 5


@dataclass(slots=True)
class RecoveryStats:
    """Counters of self-recovery, for logs and metrics.

    Attributes:
        oom_splits: batches split after a CUDA out-of-memory error.
        cpu_fallbacks: single pairs scored on CPU because they did not fit on the GPU.
        fp32_recomputes: half-precision batches recomputed in float32 after non-finite scores.
        token_budget: the lowered padded-token budget per forward pass (``None``: never lowered).
    """

    oom_splits: int = 0
    cpu_fallbacks: int = 0
    fp32_recomputes: int = 0
    token_budget: int | None = None


def _rows(batch: EncodedBatch, start: int, stop: int) -> EncodedBatch:
    """Rows ``start:stop`` of a batch, with the padding columns no remaining row needs cut off."""
    length = max(int(batch.attention_mask[start:stop].sum(axis=1).max()), 1)
    return EncodedBatch(
        input_ids=batch.input_ids[start:stop, :length],
        attention_mask=batch.attention_mask[start:stop, :length],
        token_type_ids=None if batch.token_type_ids is None else batch.token_type_ids[start:stop, :length],
        shared_prefix=None if batch.shared_prefix is None else batch.shared_prefix[start:stop],
    )


def _auto_placement(model_dir: Path, requested_dtype: str) -> tuple[torch.device, torch.dtype]:
    """device="auto": the GPU with the most free memory if the model fits there, else CPU (logged)."""
    gpus = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            free, _ = torch.cuda.mem_get_info(index)
            gpus.append(GpuMemory(index, int(free), torch.cuda.is_bf16_supported()))
    prefer_bf16 = stored_dtype(model_dir) == "bfloat16"
    placement = choose_placement(requested_dtype, gpus, count_parameters(model_dir), prefer_bf16=prefer_bf16)
    (_log.warning if gpus and placement.device == "cpu" else _log.info)("placement: %s", placement.reason)
    return torch.device(placement.device), _DTYPES[placement.dtype]


def _choose_device(requested: str) -> torch.device:
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = (
                f"torch {torch.__version__} (CUDA {torch.version.cuda})"
                if torch.version.cuda
                else (f"torch {torch.__version__}, a CPU-only build")
            )
            raise ConfigError(
                f"device {requested!r} asked for, but no CUDA GPU is usable with {build}",
                fix="use device='cpu' or 'auto'; for a GPU install a CUDA build of torch and check "
                "nvidia-smi and CUDA_VISIBLE_DEVICES",
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"device {requested!r} asked for, but only {count} GPU(s) are visible",
                fix=f"use cuda:0 … cuda:{count - 1} (CUDA_VISIBLE_DEVICES renumbers GPUs from 0)",
            )
    return device


def _forward(model: Any, device: torch.device, batch: EncodedBatch, autocast: bool) -> npt.NDArray[np.float32]:
    """One forward pass of ``model`` on ``device`` (under bfloat16 autocast if asked); float32 logits on the host."""
    inputs = {
        "input_ids": torch.from_numpy(batch.input_ids).to(device, non_blocking=True),
        "attention_mask": torch.from_numpy(batch.attention_mask).to(device, non_blocking=True),
    }
    if batch.token_type_ids is not None:
        inputs["token_type_ids"] = torch.from_numpy(batch.token_type_ids).to(device, non_blocking=True)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(**inputs).logits
    result: npt.NDArray[np.float32] = logits[:, 0].float().cpu().numpy()
    return result


def _probe(rows: int, length: int) -> EncodedBatch:
    """``rows`` pairs of ``length`` tokens; the last lacks its last token, so the mask is used as in a
    padded batch (an all-ones mask lets attention take a faster path that real batches do not)."""
    ids = np.full((rows, length), _PROBE_TOKEN_ID, dtype=np.int64)
    mask = np.ones_like(ids)
    mask[-1, -1] = 0
    return EncodedBatch(input_ids=ids, attention_mask=mask)


def time_cpu_modes(config: Any, modes: list[str], budget: float = PROBE_BUDGET) -> dict[str, float]:
    """Each mode's best seconds for one encoder layer of ``config``'s shape on ``PROBE_TOKENS`` tokens (rows of
    ``PROBE_LENGTH``), random weights: the layers hold nearly all of a reranker's work, and one layer keeps the
    measurement short (``cpu_mode.time_alternating`` times them)."""
    small = copy.deepcopy(config)
    small.num_hidden_layers, small.vocab_size, small.num_labels = 1, 8, 1
    with quiet_loading():
        built = AutoModelForSequenceClassification.from_config(small, dtype=torch.float32)  # type: ignore[no-untyped-call]
        base = built.eval()
    models = {"float32": base, "bfloat16-autocast": base, "bfloat16": copy.deepcopy(base).to(torch.bfloat16)}
    length = min(PROBE_LENGTH, int(getattr(config, "max_position_embeddings", PROBE_LENGTH + 4)) - 4)
    probe = _probe(max(PROBE_TOKENS // length, 1), length)
    cpu = torch.device("cpu")
    runs = {mode: functools.partial(_forward, models[mode], cpu, probe, mode == "bfloat16-autocast") for mode in modes}
    return time_alternating(runs, budget)


def measured_cpu_mode(model_dir: Path) -> CpuModeDecision:
    """What ``dtype="auto"`` runs on this CPU for the model in ``model_dir``: measured once per CPU, torch version,
    thread count and model shape, then cached (``crossrank.backends.cpu_mode``)."""
    try:
        config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    except (OSError, ValueError):  # a config transformers cannot read alone: loading the model says what is wrong
        return CpuModeDecision("float32", {}, "not gated")
    names = ("hidden_size", "intermediate_size", "num_attention_heads")
    shape = {"model_type": config.model_type, **{name: getattr(config, name, None) for name in names}}
    flags = cpu_flags()
    key = decision_key(shape, threads=torch.get_num_threads(), runtime={"torch": torch.__version__}, flags=flags)
    passed = gated(config.model_type, CPU_MODES)  # every reduced torch mode is a bfloat16 one
    allowed = passed if bfloat16_instructions(flags) else ()
    measure = functools.partial(time_cpu_modes, config)
    return decide(key, allowed, measure, busy=machine_busy(), untimed=NO_BFLOAT16 if passed else "not gated")


def _choose_dtype(requested: str, device: torch.device) -> torch.dtype:
    if requested == "auto":
        # Half precision is 2-5x faster on GPUs; on a CPU the measured choice (TorchBackend) may change this.
        return torch.float16 if device.type == "cuda" else torch.float32
    dtype = _DTYPES[requested]
    if dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("this GPU has no bfloat16 support", fix="use dtype='float16'")
    return dtype


class TorchBackend:
    """Runs ``AutoModelForSequenceClassification`` under ``torch.inference_mode``.

    Weights load from safetensors only unless ``allow_pickle``; remote code only with
    ``trust_remote_code``. Logits are cast to float32 on the device before they leave it.
    """

    name = "torch"
    runs_pairs_alone = False  # padded batches, with SDPA masking the padding
    decoder = False  # a decoder reranker keeps every layer's keys and values through a pass (placement)

    def __init__(
        self,
        model_dir: Path,
        *,
        runtime: RuntimeOptions,
        allow_pickle: bool,
        trust_remote_code: bool,
        model_digest: str = "",  # the registry's: torch reads the weights afresh, so keys nothing on it
    ) -> None:
        if runtime.quantize != "none":
            raise ConfigError(
                f"quantize={runtime.quantize!r} needs backend='onnx'", fix="pass backend='onnx' or quantize='none'"
            )
        if runtime.num_threads is not None:
            torch.set_num_threads(runtime.num_threads)
        if runtime.device == "auto":
            self._device, self._dtype = _auto_placement(model_dir, runtime.dtype)
            if runtime.dtype != "auto":
                self._dtype = _choose_dtype(runtime.dtype, self._device)
        else:
            self._device = _choose_device(runtime.device)
            self._dtype = _choose_dtype(runtime.dtype, self._device)
        # dtype="auto" on CPU: float32, float32 weights under bfloat16 autocast, or bfloat16 weights, as measured.
        self.cpu_mode = measured_cpu_mode(model_dir) if runtime.dtype == "auto" and self._device.type == "cpu" else None
        self._autocast = self.cpu_mode is not None and self.cpu_mode.mode == "bfloat16-autocast"
        if self.cpu_mode is not None and self.cpu_mode.mode == "bfloat16":
            self._dtype = torch.bfloat16
        self.device = str(self._device)
        self.dtype = "bfloat16-autocast" if self._autocast else str(self._dtype).removeprefix("torch.")
        self.fallback = runtime.fallback
        self.recovery = RecoveryStats()
        self._model_dir = model_dir
        self._load_options: dict[str, Any] = {
            "use_safetensors": None if allow_pickle else True,
            "trust_remote_code": trust_remote_code,
        }
        self._model = self._load(self._dtype).to(self._device).eval()
        self._fp32: Any = None  # a float32 copy, made on first need (overflow or CPU fallback)
        self._fp32_device: torch.device | None = None
        self.batching = self._batching()

    # The transformers class that loads the model (a subclass runs another kind of model).
    _auto_class: Any = AutoModelForSequenceClassification

    def _load(self, dtype: torch.dtype) -> Any:
        try:
            # transformers picks SDPA attention by itself wherever the architecture supports it.
            with quiet_loading():
                cast = self._cast_on_load(dtype)
                if cast is not None:
                    return cast
                return self._auto_class.from_pretrained(self._model_dir, dtype=dtype, **self._load_options)
        except (OSError, RuntimeError, ValueError) as exc:
            if "trust_remote_code" in str(exc):
                raise UnsupportedModelError(
                    f"{self._model_dir} needs the Python code it ships (config.json auto_map) to load, "
                    "and crossrank does not run a model's code unless asked",
                    fix="read that code; if you trust it, pass trust_remote_code=True (CROSSRANK_TRUST_REMOTE_CODE=1)",
                ) from exc
            raise IntegrityError(
                f"could not load the weights in {self._model_dir}: {exc}",
                fix="the files may be incomplete or corrupt: download the model again (crossrank verify tells more)",
            ) from exc

    def _cast_on_load(self, dtype: torch.dtype) -> Any:
        """On a CPU, a model whose checkpoint is stored in another precision, built from its weights cast a slice
        at a time (``backends/weights.py``: half the peak memory of transformers' cast for bfloat16 from float32);
        ``None`` where that does not apply (a GPU, remote code, nothing to cast, an unknown model class)."""
        if self._device.type != "cpu" or self._load_options["trust_remote_code"]:
            return None
        cast = cast_state_dict(self._model_dir, dtype)
        if cast is None:
            return None
        config = AutoConfig.from_pretrained(self._model_dir, trust_remote_code=False)
        try:  # the auto class's own class for this config (the auto class itself wants a folder to read)
            model_class = self._auto_class._model_mapping[type(config)]
        except (AttributeError, KeyError):
            return None
        return model_class.from_pretrained(None, config=config, state_dict=cast, dtype=dtype)

    def _shape(self) -> dict[str, int]:
        """The sizes activation memory depends on, through the config's own aliases (DistilBERT's ``dim``)."""
        config = self._model.config
        names = (
            "hidden_size",
            "intermediate_size",
            "max_position_embeddings",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
        )
        return {name: int(getattr(config, name)) for name in names if isinstance(getattr(config, name, None), int)}

    def _batching(self) -> BatchingOptions:
        """The CPU defaults; on a GPU, a token budget sized to the memory left free by loading and the
        least a pass costs there, measured (logged)."""
        if self._device.type != "cuda":
            return BatchingOptions()
        free, _ = torch.cuda.mem_get_info(self._device)
        batching = gpu_batching(int(free), self._shape(), str(self._dtype).removeprefix("torch."), decoder=self.decoder)
        batching = dataclasses.replace(batching, min_pass_tokens=self._min_pass_tokens(batching.max_batch_tokens))
        _log.info(
            "batching on %s: %d tokens, %d pairs per forward pass at most (%.1f GiB free after loading); "
            "a pass costs at least %d tokens' time",
            self.device,
            batching.max_batch_tokens,
            batching.max_batch_size,
            free / _GIB,
            batching.min_pass_tokens,
        )
        return batching

    def _min_pass_tokens(self, budget: int) -> int:
        """A one-pair pass and a full pass (within ``budget``) timed on the model's device; see ``min_pass_tokens``.

        Only a price for the planner: a pass that fails here leaves passes unpriced (0) and the model loads.
        """
        length = min(_PROBE_LENGTH, self._shape().get("max_position_embeddings", 512) - 2, budget)
        rows = max(min(budget, _PROBE_TOKENS) // length, 1)
        probes = (_probe(1, length), _probe(rows, length))
        best = [math.inf, math.inf]  # seconds: one pair, full
        try:
            for probe in probes:
                self._run(self._model, self._model.device, probe)  # kernels chosen, workspaces made
            # Alternated, so a clock or a neighbour's load that changes during the timing weighs on both alike.
            for _ in range(_PROBE_ROUNDS):
                for i, probe in enumerate(probes):
                    start = time.perf_counter()
                    self._run(self._model, self._model.device, probe)  # returns on the host: the device is done
                    best[i] = min(best[i], time.perf_counter() - start)
        except RuntimeError as exc:  # torch.OutOfMemoryError among them
            _log.warning("timing a forward pass on %s failed (%s); passes not priced", self.device, exc)
            return 0
        finally:
            self._free_cache()  # the probe's activations would otherwise look taken to other processes
        tokens = rows * length
        _log.info("timed on %s: one pair %.2f ms, %d tokens %.2f ms", self.device, best[0] * 1e3, tokens, best[1] * 1e3)
        return min_pass_tokens(best[0], best[1], tokens)

    def _run(self, model: Any, device: torch.device, batch: EncodedBatch) -> npt.NDArray[np.float32]:
        """One forward pass, under bfloat16 autocast where ``dtype="auto"`` chose it for this CPU."""
        return _forward(model, device, batch, self._autocast and device.type == "cpu")

    def forward(self, batch: EncodedBatch) -> npt.NDArray[np.float32]:
        """Score a batch; returns one float32 logit per pair, recovering from OOM and fp16 overflow."""
        budget = self.recovery.token_budget
        rows = batch.size if budget is None else max(budget // max(batch.input_ids.shape[1], 1), 1)
        if rows >= batch.size:
            return self._forward_recovering(batch)
        parts = [self._forward_recovering(_rows(batch, i, i + rows)) for i in range(0, batch.size, rows)]
        return np.concatenate(parts)

    def _forward_recovering(self, batch: EncodedBatch) -> npt.NDArray[np.float32]:
        try:
            logits = self._run(self._model, self._device, batch)
        except torch.OutOfMemoryError as exc:
            self._free_cache()
            tokens = int(batch.input_ids.size)
            budget = self.recovery.token_budget
            self.recovery.token_budget = max(tokens // 2, 1) if budget is None else min(budget, max(tokens // 2, 1))
            if batch.size == 1:
                return self._single_pair_oom(batch, exc)
            self.recovery.oom_splits += 1
            _log.warning(
                "out of memory on %s for %d pairs x %d tokens; splitting in halves, token budget now %d",
                self.device,
                batch.size,
                batch.input_ids.shape[1],
                self.recovery.token_budget,
            )
            half = batch.size // 2
            return np.concatenate(
                [
                    self._forward_recovering(_rows(batch, 0, half)),
                    self._forward_recovering(_rows(batch, half, batch.size)),
                ]
            )
        except RuntimeError as exc:
            raise InferenceError(f"the model failed on a batch of {batch.size} pairs: {exc}") from exc
        if self._dtype != torch.float32 and not np.isfinite(logits).all():
            return self._recompute_fp32(batch, logits)
        return logits

    def _free_cache(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.empty_cache()

    def _float32_model(self) -> tuple[Any, torch.device]:
        """A float32 copy: on the same GPU when it fits beside the running model, else on CPU."""
        if self._fp32 is None:
            device = torch.device("cpu")
            if self._device.type == "cuda":
                free, _ = torch.cuda.mem_get_info(self._device)
                # Beside its weights, the copy recomputes batches of up to the token budget in float32.
                per_token = activation_bytes_per_token(self._shape(), "float32", decoder=self.decoder)
                activations = self.batching.max_batch_tokens * per_token
                if free >= needed_bytes(count_parameters(self._model_dir), "float32") + activations:
                    device = self._device
            self._fp32 = self._load(torch.float32).to(device).eval()
            self._fp32_device = device
        assert self._fp32_device is not None
        return self._fp32, self._fp32_device

    def _cpu_model(self) -> Any:
        model, device = self._float32_model()
        if device.type != "cpu":
            # The float32 copy sits on the GPU that just ran out of memory: move it off.
            self._fp32 = model = model.to("cpu")
            self._fp32_device = torch.device("cpu")
            self._free_cache()
        return model

    def _recompute_fp32(self, batch: EncodedBatch, logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        bad = int((~np.isfinite(logits)).sum())
        model, device = self._float32_model()
        self.recovery.fp32_recomputes += 1
        _log.warning(
            "%d of %d scores were not finite in %s (overflow); recomputed the batch in float32 on %s. "
            "Fix: use dtype='bfloat16' (same range as float32) or 'float32' for this model",
            bad,
            batch.size,
            self.dtype,
            device,
        )
        try:
            result = self._run(model, device, batch)
        except torch.OutOfMemoryError:
            # The copy fit beside the model, but this batch's float32 activations do not (a token budget
            # above the one the copy was placed for, asked for explicitly): CPU, now and from then on.
            _log.warning("the float32 recompute ran out of memory on %s; moving the float32 copy to CPU", device)
            result = self._run(self._cpu_model(), torch.device("cpu"), batch)
        if not np.isfinite(result).all():
            raise InferenceError(
                f"the model gives non-finite scores even in float32 on {batch.size} pairs",
                fix="the weights are broken: run `crossrank verify` on the model folder and download it again",
            )
        return result

    def _single_pair_oom(self, batch: EncodedBatch, exc: torch.OutOfMemoryError) -> npt.NDArray[np.float32]:
        tokens = int(batch.attention_mask.sum())
        if self.fallback == "cpu":
            self.recovery.cpu_fallbacks += 1
            _log.warning(
                "one pair of %d tokens does not fit in %s memory; scoring it on CPU (fallback='cpu'), "
                "%d CPU fallback(s) so far",
                tokens,
                self.device,
                self.recovery.cpu_fallbacks,
            )
            return self._run(self._cpu_model(), torch.device("cpu"), batch)
        raise DeviceMemoryError(
            f"{self.device} ran out of memory on a single pair of {tokens} tokens: {self._memory_facts()}",
            fix="stop the processes holding GPU memory, lower max_length, use dtype='float16', or pass "
            "fallback='cpu' (CROSSRANK_FALLBACK=cpu) to score such pairs on CPU",
        ) from exc

    def _memory_facts(self) -> str:
        """Free and total memory of this GPU and the other processes holding it, for the error message."""
        if self._device.type != "cuda":
            return f"no memory figures for {self.device}"
        free, total = torch.cuda.mem_get_info(self._device)
        facts = f"{free / _GIB:.2f} GiB free of {total / _GIB:.1f} GiB"
        uuid = str(getattr(torch.cuda.get_device_properties(self._device), "uuid", "")).removeprefix("GPU-")
        report = nvml_report()
        if not report.available:
            return f"{facts}; who holds the rest is unknown ({report.reason})"
        gpus = [g for g in report.gpus if g.uuid.removeprefix("GPU-") == uuid] or list(report.gpus)
        holders = ", ".join(describe_processes(g.processes, exclude_pid=os.getpid()) for g in gpus)
        return f"{facts}; held by {holders}"

    def close(self) -> None:
        """Drop the model and return cached GPU memory to the driver."""
        del self._model
        self._fp32 = None
        if self._device.type == "cuda":
            torch.cuda.empty_cache()
