"""``dtype="auto"`` on the ONNX backend: float32 or int8, timed on one encoder layer of the model's shape.

The layer is built here as an ONNX graph (random weights; attention, residuals, LayerNorm and GELU as BERT's
layer has them), quantized with the export's own int8 arguments (the six weight products, as the export
quantizes them), and both run in onnxruntime with the backend's session options as the backend runs them:
float32 on a padded batch, int8 each pair alone. No torch, no export of the model: a second or two for
bge-reranker-v2-m3's shape. ``cpu_mode`` keeps the decision.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from crossrank.backends.cpu_mode import (
    ONNX_MODES,
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
from crossrank.backends.onnx_export import int8_arguments

__all__ = ["layer_graph", "measured_onnx_mode", "time_onnx_modes"]

_log = logging.getLogger(__name__)
_OPSET = 20  # Gelu and LayerNormalization as single operators
_WEIGHTS = ("query", "key", "value", "output", "intermediate", "down")
_SHAPE_NAMES = ("hidden_size", "intermediate_size", "num_attention_heads")


def layer_graph(config: Mapping[str, Any], seed: int = 0) -> onnx.ModelProto:
    """One encoder layer of ``config``'s shape (``hidden`` [rows, length, hidden] and an additive ``mask`` [rows,
    1, 1, length] in, ``out`` out), float32, random weights."""
    width, inner, heads = (int(config[name]) for name in _SHAPE_NAMES)
    random = np.random.default_rng(seed)
    sizes = {"query": (width, width), "key": (width, width), "value": (width, width), "output": (width, width)}
    sizes |= {"intermediate": (width, inner), "down": (inner, width)}
    arrays = {name: (random.standard_normal(size) * 0.02).astype(np.float32) for name, size in sizes.items()}
    arrays |= {f"{name}.bias": np.zeros(size[1], np.float32) for name, size in sizes.items()}
    arrays |= {f"norm{i}.weight": np.ones(width, np.float32) for i in (1, 2)}
    arrays |= {f"norm{i}.bias": np.zeros(width, np.float32) for i in (1, 2)}
    arrays |= {
        "split_heads": np.array([0, 0, heads, width // heads], np.int64),
        "merge_heads": np.array([0, 0, width], np.int64),
        "scale": np.array((width // heads) ** -0.5, np.float32),
    }
    initializers = [numpy_helper.from_array(array, name) for name, array in arrays.items()]
    epsilon = float(config.get("layer_norm_eps", 1e-12))
    nodes = []

    def dense(source: str, name: str) -> str:
        nodes.append(helper.make_node("MatMul", [source, name], [f"{name}.product"], name=f"{name}.matmul"))
        nodes.append(helper.make_node("Add", [f"{name}.product", f"{name}.bias"], [f"{name}.out"]))
        return f"{name}.out"

    def norm(index: int) -> tuple[str, str]:
        return f"norm{index}.weight", f"norm{index}.bias"

    def heads_of(name: str, order: list[int]) -> str:
        nodes.append(helper.make_node("Reshape", [dense("hidden", name), "split_heads"], [f"{name}.split"]))
        nodes.append(helper.make_node("Transpose", [f"{name}.split"], [f"{name}.heads"], perm=order))
        return f"{name}.heads"

    query, key, value = heads_of("query", [0, 2, 1, 3]), heads_of("key", [0, 2, 3, 1]), heads_of("value", [0, 2, 1, 3])
    nodes += [
        helper.make_node("MatMul", [query, key], ["scores"]),
        helper.make_node("Mul", ["scores", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "mask"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["weights"], axis=-1),
        helper.make_node("MatMul", ["weights", value], ["context"]),
        helper.make_node("Transpose", ["context"], ["context.rows"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["context.rows", "merge_heads"], ["attended"]),
    ]
    nodes.append(helper.make_node("Add", [dense("attended", "output"), "hidden"], ["residual1"]))
    nodes.append(helper.make_node("LayerNormalization", ["residual1", *norm(1)], ["normed1"], epsilon=epsilon))
    nodes.append(helper.make_node("Gelu", [dense("normed1", "intermediate")], ["activated"]))
    nodes.append(helper.make_node("Add", [dense("activated", "down"), "normed1"], ["residual2"]))
    nodes.append(helper.make_node("LayerNormalization", ["residual2", *norm(2)], ["out"], epsilon=epsilon))
    inputs = [
        helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["rows", "length", width]),
        helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["rows", 1, 1, "length"]),
    ]
    output = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["rows", "length", width])
    graph = helper.make_graph(nodes, "crossrank-probe-layer", inputs, [output], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """onnxruntime's quantizer logs advice and per-tensor notes on the root logger (the export's child collects
    them); the probe's are about a random layer, so they are dropped rather than shown at every first load."""
    root = logging.getLogger()
    root.addFilter(_not_quantizer)
    try:
        yield
    finally:
        root.removeFilter(_not_quantizer)


def _not_quantizer(record: logging.LogRecord) -> bool:
    return f"{os.sep}quantization{os.sep}" not in record.pathname


def _feeds(rows: int, length: int, width: int) -> dict[str, np.ndarray]:
    """A padded batch: the last row lacks its last token, as in the torch probe."""
    hidden = np.random.default_rng(1).standard_normal((rows, length, width)).astype(np.float32)
    mask = np.zeros((rows, 1, 1, length), np.float32)
    mask[-1, ..., -1] = np.finfo(np.float32).min
    return {"hidden": hidden, "mask": mask}


def _pairs_alone(session: ort.InferenceSession, feeds: Mapping[str, np.ndarray]) -> None:
    """What the int8 backend does with a batch: each row alone, without its padding."""
    hidden, mask = feeds["hidden"], feeds["mask"]
    for row in range(hidden.shape[0]):
        length = int((mask[row, 0, 0] == 0).sum())
        session.run(None, {"hidden": hidden[row : row + 1, :length], "mask": mask[row : row + 1, ..., :length]})


def time_onnx_modes(
    config: Mapping[str, Any],
    modes: list[str],
    *,
    options: ort.SessionOptions,
    seven_bit: bool,
    budget: float = PROBE_BUDGET,
) -> dict[str, float]:
    """Each mode's best seconds for one encoder layer of ``config``'s shape on ``PROBE_TOKENS`` tokens (rows of
    ``PROBE_LENGTH``), run as the ONNX backend runs it in that mode."""
    from onnxruntime.quantization import quantize_dynamic

    length = min(PROBE_LENGTH, int(config.get("max_position_embeddings", PROBE_LENGTH + 4)) - 4)
    feeds = _feeds(max(PROBE_TOKENS // length, 1), length, int(config["hidden_size"]))
    runs: dict[str, Callable[[], object]] = {}
    with tempfile.TemporaryDirectory(prefix="crossrank-probe-") as folder:
        plain, int8 = Path(folder) / "layer.onnx", Path(folder) / "layer-int8.onnx"
        onnx.save_model(layer_graph(config), plain)
        for mode in modes:
            if mode == "float32":
                session = ort.InferenceSession(str(plain), options, providers=["CPUExecutionProvider"])
                runs[mode] = functools.partial(session.run, None, feeds)
            elif mode == "int8":
                nodes = [f"{name}.matmul" for name in _WEIGHTS]
                with _quiet_quantizer():
                    quantize_dynamic(plain, int8, **int8_arguments(seven_bit=seven_bit), nodes_to_quantize=nodes)
                session = ort.InferenceSession(str(int8), options, providers=["CPUExecutionProvider"])
                runs[mode] = functools.partial(_pairs_alone, session, feeds)
    return time_alternating(runs, budget)


def measured_onnx_mode(model_dir: Path, *, options: ort.SessionOptions, seven_bit: bool) -> CpuModeDecision:
    """What ``dtype="auto"`` runs on the ONNX backend on this CPU for the model in ``model_dir``: measured once per
    CPU, onnxruntime version, thread count and model shape, then cached (``crossrank.backends.cpu_mode``)."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
        model_type = str(config["model_type"])
        shape = {"model_type": model_type, **{name: int(config[name]) for name in _SHAPE_NAMES}}
    except (OSError, ValueError, KeyError, TypeError):  # the export says what is wrong with such a model
        return CpuModeDecision("float32", {}, "not gated")
    threads = options.intra_op_num_threads or os.cpu_count() or 1
    key = decision_key(shape, threads=threads, runtime={"onnxruntime": ort.__version__})
    allowed = gated(model_type, ONNX_MODES)
    measure = functools.partial(time_onnx_modes, config, options=options, seven_bit=seven_bit)
    try:
        return decide(key, allowed, measure, busy=machine_busy())
    except OSError as exc:  # no room for the probe's graphs in the temporary folder: nothing decided, nothing cached
        _log.warning("dtype='auto' could not time int8 against float32 (%s); running float32", exc)
        return CpuModeDecision("float32", {}, "not measured (the probe could not write its graphs)")
