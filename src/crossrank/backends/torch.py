"""TorchBackend: a Hugging Face sequence classifier run by PyTorch (the only torch importer)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from transformers import AutoModelForSequenceClassification

from crossrank.backends.base import EncodedBatch
from crossrank.config import RuntimeOptions
from crossrank.errors import ConfigError, InferenceError, IntegrityError

__all__ = ["TorchBackend"]

_log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _choose_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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


def _choose_dtype(requested: str, device: torch.device) -> torch.dtype:
    if requested == "auto":
        # Half precision is 2-5x faster on GPUs and several times slower on most CPUs.
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

    def __init__(
        self, model_dir: Path, *, runtime: RuntimeOptions, allow_pickle: bool, trust_remote_code: bool
    ) -> None:
        if runtime.num_threads is not None:
            torch.set_num_threads(runtime.num_threads)
        self._device = _choose_device(runtime.device)
        self._dtype = _choose_dtype(runtime.dtype, self._device)
        self.device = str(self._device)
        self.dtype = str(self._dtype).removeprefix("torch.")
        try:
            # transformers picks SDPA attention by itself wherever the architecture supports it.
            model = AutoModelForSequenceClassification.from_pretrained(
                model_dir,
                dtype=self._dtype,
                use_safetensors=None if allow_pickle else True,
                trust_remote_code=trust_remote_code,
            )
        except (OSError, RuntimeError, ValueError) as exc:
            raise IntegrityError(
                f"could not load the weights in {model_dir}: {exc}",
                fix="the files may be incomplete or corrupt: download the model again",
            ) from exc
        self._model = model.to(self._device).eval()

    def forward(self, batch: EncodedBatch) -> npt.NDArray[np.float32]:
        """Score a batch; returns one float32 logit per pair."""
        inputs = {
            "input_ids": torch.from_numpy(batch.input_ids).to(self._device, non_blocking=True),
            "attention_mask": torch.from_numpy(batch.attention_mask).to(self._device, non_blocking=True),
        }
        if batch.token_type_ids is not None:
            inputs["token_type_ids"] = torch.from_numpy(batch.token_type_ids).to(self._device, non_blocking=True)
        try:
            with torch.inference_mode():
                logits = self._model(**inputs).logits
        except RuntimeError as exc:
            raise InferenceError(f"the model failed on a batch of {batch.size} pairs: {exc}") from exc
        result: npt.NDArray[np.float32] = logits[:, 0].float().cpu().numpy()
        return result

    def close(self) -> None:
        """Drop the model and return cached GPU memory to the driver."""
        del self._model
        if self._device.type == "cuda":
            torch.cuda.empty_cache()
