"""Export a Hugging Face sequence classifier to ONNX with torch (the ONNX backend's only torch use).

The graph takes ``input_ids``, ``attention_mask`` (and ``token_type_ids`` where the model reads
them) with dynamic batch and sequence axes, and returns ``logits`` ``[batch, num_labels]``.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import transformers
from transformers import AutoModelForSequenceClassification

from crossrank.backends.weights import quiet_loading
from crossrank.errors import BackendError, IntegrityError

__all__ = ["ExportedGraph", "export_onnx"]

_log = logging.getLogger(__name__)

# Opset 17 has LayerNormalization; onnxruntime's transformer optimizer knows its patterns.
_OPSET = 17
# Protobuf files cannot exceed 2 GiB: larger models keep their weights in a side file.
_EXTERNAL_DATA_BYTES = 1_500_000_000


@dataclass(frozen=True, slots=True)
class ExportedGraph:
    """What the exporter wrote and what the optimizer needs to know about the model.

    Attributes:
        path: the ``.onnx`` file.
        inputs: the graph's input names, in order.
        model_type: ``config.model_type`` (``bert``, ``xlm-roberta``, ...).
        num_heads: attention heads per layer.
        hidden_size: width of the hidden states.
        external_data: whether the weights sit in a side file (models over ~1.5 GB).
        check_feeds: inputs of another shape than the traced ones, to check the graph on.
        check_logits: the torch model's float32 logits on ``check_feeds``.
    """

    path: Path
    inputs: tuple[str, ...]
    model_type: str
    num_heads: int
    hidden_size: int
    external_data: bool
    check_feeds: dict[str, npt.NDArray[np.int64]]
    check_logits: npt.NDArray[np.float32]


def _load(model_dir: Path, *, allow_pickle: bool, trust_remote_code: bool) -> Any:
    try:
        # Eager attention exports to the MatMul/Softmax pattern onnxruntime fuses into one Attention op.
        with quiet_loading():
            model = AutoModelForSequenceClassification.from_pretrained(
                model_dir,
                dtype=torch.float32,
                attn_implementation="eager",
                use_safetensors=None if allow_pickle else True,
                trust_remote_code=trust_remote_code,
            )
    except (OSError, RuntimeError, ValueError) as exc:
        raise IntegrityError(
            f"could not load the weights in {model_dir} for the ONNX export: {exc}",
            fix="the files may be incomplete or corrupt: download the model again (crossrank verify tells more)",
        ) from exc
    return model.eval()


def _input_names(model: Any) -> tuple[str, ...]:
    reads_types = "token_type_ids" in inspect.signature(model.forward).parameters
    has_types = int(getattr(model.config, "type_vocab_size", 0) or 0) >= 1
    return (
        ("input_ids", "attention_mask", "token_type_ids")
        if reads_types and has_types
        else ("input_ids", "attention_mask")
    )


def _sample(model: Any, names: tuple[str, ...], rows: int, length: int) -> dict[str, torch.Tensor]:
    """``rows`` rows of ``length`` tokens, the last one padded, so the graph keeps the masking path."""
    config = model.config
    pad = int(getattr(config, "pad_token_id", 0) or 0)
    low = pad + 3  # clear of the special ids at the start of every vocabulary
    ids = torch.arange(low, low + rows * length, dtype=torch.int64).remainder(int(config.vocab_size)).view(rows, length)
    mask = torch.ones_like(ids)
    ids[-1, length // 2 :] = pad
    mask[-1, length // 2 :] = 0
    sample = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in names:
        sample["token_type_ids"] = torch.zeros_like(ids)
    return sample


def export_onnx(model_dir: Path, target: Path, *, allow_pickle: bool, trust_remote_code: bool) -> ExportedGraph:
    """Write ``model_dir``'s model as ONNX to ``target`` (a file path in an existing folder)."""
    model = _load(model_dir, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    names = _input_names(model)
    sample = _sample(model, names, rows=2, length=16)
    check = _sample(model, names, rows=3, length=23)
    with torch.inference_mode():
        check_logits = model(**check).logits.float().numpy()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    _log.info("exporting %s to ONNX (%d MB of weights)", model_dir, weight_bytes // 2**20)
    # The tracer warns about every Python-level branch it freezes; the graph is checked on another
    # shape afterwards instead (OnnxBackend), which is what those warnings are about.
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript exporter: seconds where the dynamo one takes minutes, and its graph is the
        # one onnxruntime's transformer optimizer is written for.
        try:
            torch.onnx.export(
                model,
                (sample,),
                str(target),
                input_names=list(names),
                output_names=["logits"],
                dynamic_axes={**axes, "logits": {0: "batch"}},
                opset_version=_OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        except OSError:
            raise  # disk full or unwritable: the caller names the folder and the fix
        except Exception as exc:  # the tracer runs transformers' own code: a failure there can be of any type
            raise BackendError(
                f"the ONNX export of {model_dir} failed under torch {torch.__version__} and transformers "
                f"{transformers.__version__}: {type(exc).__name__}: {exc}",
                fix="some transformers releases cannot be traced (5.5.x among them): pip install -U transformers, "
                "or use backend='torch'",
            ) from exc
    config = model.config
    return ExportedGraph(
        path=target,
        inputs=names,
        model_type=str(config.model_type),
        num_heads=int(config.num_attention_heads),
        hidden_size=int(config.hidden_size),
        external_data=weight_bytes > _EXTERNAL_DATA_BYTES,
        check_feeds={name: value.numpy() for name, value in check.items()},
        check_logits=check_logits,
    )
