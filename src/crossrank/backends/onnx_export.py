"""Make an ONNX export step by step in child processes, after checking there is memory for it.

The steps: export with torch (``backends/export.py``), fuse attention, GELU and LayerNorm with
onnxruntime's transformer optimizer, check the graph against torch's logits, quantize the weights to
int8, store the result. All in one process, with every weight loaded by each step and copied by its
shape inferences, m3-shape's export peaked at 20.3 GB (9x its float32 weights). Now each step of a large
model runs in a process of its own, so a step's memory is gone when it ends (a small model's steps share
one), and the weights stay in a side file that fusion and quantization read only where they change a
weight: the export peaks at torch's step, 2.6x the weights (BENCHMARKS.md), and the calling process never
imports torch. A step hands its result back in a JSON file; its errors come back as the same typed errors.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from crossrank import errors
from crossrank.backends.placement import count_parameters
from crossrank.errors import BackendError, CrossrankError, ExportMemoryError

__all__ = [
    "ExportSteps",
    "available_memory",
    "check_export_memory",
    "export_memory_needed",
    "export_steps",
    "int8_arguments",
]

_log = logging.getLogger(__name__)

# The export's peak from the float32 weights: its largest step (torch's) holds the model and its folded
# copies, plus what a Python process with torch and transformers takes anyway. m3-shape (2.27 GB of weights):
# 6.8 GB asked for, 6.0 GB measured for the whole process tree (BENCHMARKS.md).
_MEMORY_FACTOR = 2.5
_MEMORY_BASE = 1 << 30
# The end of a failed step's output that its error quotes.
_OUTPUT_TAIL = 2000
# float32 weights from which each step runs in a process of its own: below, the processes' starts (Python,
# torch, onnxruntime: seconds each) cost more than the memory one process for all the steps keeps.
_SEPARATE_FROM = 512 << 20
# How long a child whose input closed may take to exit.
_EXIT_SECONDS = 60


def export_memory_needed(model_dir: Path) -> int:
    """Bytes of memory the export of ``model_dir``'s model needs at its peak."""
    return int(_MEMORY_FACTOR * 4 * count_parameters(model_dir)) + _MEMORY_BASE


def available_memory() -> int | None:
    """Bytes this process can still allocate: the system's ``MemAvailable``, or less under a cgroup limit.

    None where neither can be read (not Linux): then nothing is checked.
    """
    room: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                room.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pass
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            room.append(int(limit) - int((cgroup / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return min(room) if room else None


def check_export_memory(model_dir: Path, available: int | None) -> None:
    """Raise ``ExportMemoryError`` unless ``available`` bytes (None: unknown) cover the export's peak."""
    needed = export_memory_needed(model_dir)
    if available is None or available >= needed:
        _log.info("the ONNX export needs about %.1f GB of memory", needed / 1e9)
        return
    raise ExportMemoryError(needed, available)


class ExportSteps:
    """Runs export steps in child processes: all in one, or each in its own (``separate``).

    Each step's memory is gone when its process ends, which is what keeps a large model's export within its
    bound; a small model's steps share one process, which spares four starts of Python, torch and onnxruntime.
    ``run`` returns what the step returned and raises what it raised (typed errors and ``OSError`` as they were,
    anything else as ``BackendError``), and ``BackendError`` with the end of its output when the process died
    (killed for memory, a crash in a native library).
    """

    def __init__(self, work: Path, *, separate: bool) -> None:
        self._work, self._separate = work, separate
        self._process: subprocess.Popen[bytes] | None = None
        self._ready = -1  # the child writes a byte here when an answer is written; EOF when it died
        self._output = work / "steps.output.txt"
        self._count = 0

    def __enter__(self) -> ExportSteps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, step: str, **args: Any) -> Any:
        """Run ``step`` (a function of this module named ``_step_<step>``) with ``args``."""
        self._count += 1
        request = self._work / f"{self._count}-{step}.request.json"
        answer = self._work / f"{self._count}-{step}.answer.json"
        request.write_text(json.dumps({"step": step, "args": args, "answer": str(answer)}))
        process = self._started()
        with contextlib.suppress(BrokenPipeError):  # a child that died already: the read below says so
            assert process.stdin is not None
            process.stdin.write(f"{request}\n".encode())
            process.stdin.flush()
        ready = os.read(self._ready, 1)
        try:
            reply = json.loads(answer.read_text()) if ready else None
        except (OSError, ValueError):
            reply = None
        if reply is None:
            self.close()
            raise _died(step, process.returncode, self._output)
        if self._separate:
            self.close()
        for name, level, message in reply.get("logs", []):
            logging.getLogger(name).log(level, "%s", message)
        _log.info("ONNX export step %s: peak memory %.2f GB", step, reply.get("peak_bytes", 0) / 1e9)
        if "error" in reply:
            raise _rebuilt(reply["error"])
        return reply["result"]

    def _started(self) -> subprocess.Popen[bytes]:
        if self._process is not None:
            return self._process
        # The child imports this crossrank even where it was put on sys.path by hand.
        package_root = str(Path(__file__).resolve().parents[2])
        paths = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        self._ready, ready_write = os.pipe()
        try:
            with self._output.open("ab") as sink:
                self._process = subprocess.Popen(
                    [*_worker_command(), str(ready_write)],
                    stdin=subprocess.PIPE,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONPATH": paths},
                    pass_fds=(ready_write,),
                )
        finally:
            os.close(ready_write)
        return self._process

    def close(self) -> None:
        """End the child process (it exits when its input closes)."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(BrokenPipeError):
            assert process.stdin is not None
            process.stdin.close()
        try:
            process.wait(timeout=_EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        os.close(self._ready)


def export_steps(work: Path, model_dir: Path) -> ExportSteps:
    """The steps' runner for ``model_dir``'s export in ``work``: one process per step where its weights are
    large, one process for all of them where they are small (``_SEPARATE_FROM``)."""
    return ExportSteps(work, separate=4 * count_parameters(model_dir) >= _SEPARATE_FROM)


def _worker_command() -> list[str]:
    """The command that runs one step (tests put a wrapper in its place to inject failures into the child)."""
    return [sys.executable, "-m", "crossrank.backends.onnx_export"]


def _died(step: str, returncode: int, output: Path) -> BackendError:
    try:
        tail = output.read_text(errors="replace")[-_OUTPUT_TAIL:].strip()
    except OSError:
        tail = ""
    if returncode < 0:
        how = f"was killed by signal {signal.Signals(-returncode).name}"
        if returncode == -signal.SIGKILL:
            how += " (the kernel's out-of-memory killer sends it when memory runs out)"
    else:
        how = f"exited with status {returncode} without an answer"
    return BackendError(
        f"the ONNX export's {step} step {how}" + (f"; its last output:\n{tail}" if tail else ""),
        fix="free memory (or export on a machine with more and copy the .crossrank folder beside the model), "
        "or use backend='torch'",
    )


def _rebuilt(error: dict[str, Any]) -> Exception:
    """The exception a step raised, rebuilt in this process."""
    if error["kind"] == "os":
        return OSError(error["errno"], error["message"], error.get("filename"))
    kind = getattr(errors, error["kind"], None)
    if isinstance(kind, type) and issubclass(kind, CrossrankError) and kind is not ExportMemoryError:
        return kind(error["message"], fix=error.get("fix"))
    return BackendError(f"the ONNX export failed: {error['message']}", fix="use backend='torch'")


def _step_export(*, model_dir: str, target: str, allow_pickle: bool, trust_remote_code: bool) -> dict[str, Any]:
    from crossrank.backends.export import export_onnx

    graph = export_onnx(Path(model_dir), Path(target), allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    _weights_aside(Path(target))
    arrays: dict[str, Any] = {"logits": graph.check_logits, **graph.check_feeds}
    np.savez(Path(target).with_suffix(".check.npz"), **arrays)
    return {
        "inputs": list(graph.inputs),
        "model_type": graph.model_type,
        "num_heads": graph.num_heads,
        "hidden_size": graph.hidden_size,
        "external_data": graph.external_data,
    }


def _weights_aside(path: Path) -> None:
    """Move the weights of the graph at ``path`` to a side file, where torch left them inside (models under 2 GB).

    The later steps then load the graph without them (``_step_optimize``, ``_step_quantize``).
    """
    import onnx
    from onnx.external_data_helper import uses_external_data

    graph = onnx.load(str(path), load_external_data=False)
    if not any(uses_external_data(tensor) for tensor in graph.graph.initializer):
        onnx.save_model(graph, str(path), save_as_external_data=True, location=f"{path.name}.data")


def _step_optimize(*, source: str, target: str, num_heads: int, hidden_size: int) -> dict[str, int]:
    """Fuse attention, GELU and LayerNorm: the graph only is loaded, the weights stay in their files."""
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    # The fusions read the few weights they merge by their paths relative to the graph; loaded, every weight
    # would be copied again by each shape inference (6x the weights in all, where this takes a fraction of them).
    os.chdir(Path(source).parent)
    graph = onnx.load(source, load_external_data=False)
    model = optimize_model(graph, model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0)
    model.save_model_to_file(target, use_external_data_format=True)
    stats: dict[str, int] = model.get_fused_operator_statistics()
    return {op: count for op, count in stats.items() if count}


def _step_check(*, graph: str, check: str) -> float:
    """The largest difference between the graph's logits and torch's on the check feeds."""
    import onnxruntime as ort

    with np.load(check) as saved:
        feeds = {name: saved[name] for name in saved.files if name != "logits"}
        want = saved["logits"]
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    return float(np.abs(session.run(["logits"], feeds)[0] - want).max())


def _step_quantize(*, source: str, target: str, external: bool, seven_bit: bool) -> None:
    """Dynamic int8: weights stored int8, activations quantized per call (VNNI/AMX kernels where present).

    ``seven_bit`` keeps weights within 7 bits, for CPUs whose kernels saturate on 8 (see ``backends.cpu``).
    The weights are read one at a time from their file, each quantized in place (``_lean_quantize``): the
    step's peak is a few copies of the largest tensor (the embeddings), where loading the graph whole took five
    of all the weights. Its output is byte for byte what ``quantize_dynamic`` alone writes.
    """
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data
    from onnxruntime.quantization import base_quantizer, onnx_quantizer, quant_utils, quantize_dynamic

    quantize_module: Any = importlib.import_module(
        "onnxruntime.quantization.quantize"
    )  # the package's name is a function

    def load_graph(path: Path) -> onnx.ModelProto:  # quantize_dynamic's loader, without loading the weights
        inferred = path.with_name(f"{path.stem}-inferred.onnx")
        onnx.shape_inference.infer_shapes_path(str(path), str(inferred))
        model = onnx.load(str(inferred), load_external_data=False)
        quant_utils.add_infer_metadata(model)
        inferred.unlink()
        return model

    def reload_graph(model: onnx.ModelProto) -> onnx.ModelProto:  # the same, for a graph changed in memory
        path = Path(f"reloaded-{os.getpid()}.onnx")  # beside the weights its graph names
        onnx.save_model(model, str(path))  # the weights still in files stay there; the few new ones are small
        try:
            return load_graph(path)
        finally:
            path.unlink()

    original_quantize, original_read = quant_utils.quantize_nparray, quant_utils.tensor_proto_to_array

    def lean(q_type: int, array: Any, scale: Any, zero_point: Any, low: Any = None, high: Any = None) -> Any:
        return _lean_quantize(original_quantize, q_type, array, scale, zero_point, low, high)

    def read(tensor: onnx.TensorProto) -> Any:  # onnx's reader keeps the bytes in the graph besides the array
        if tensor.data_type != onnx.TensorProto.FLOAT or not uses_external_data(tensor):
            return original_read(tensor)
        info = ExternalDataInfo(tensor)
        count = int(np.prod(tensor.dims, dtype=np.int64))
        return np.fromfile(info.location, dtype="<f4", count=count, offset=info.offset or 0).reshape(tensor.dims)

    os.chdir(Path(source).parent)  # weights are found by their paths relative to the graph
    quantize_module.load_model_with_shape_infer = load_graph
    onnx_quantizer.save_and_reload_model_with_shape_infer = reload_graph
    quant_utils.quantize_nparray = base_quantizer.quantize_nparray = lean
    base_quantizer.tensor_proto_to_array = onnx_quantizer.tensor_proto_to_array = read
    quantize_dynamic(
        Path(source), Path(target), **int8_arguments(seven_bit=seven_bit), use_external_data_format=external
    )


def int8_arguments(*, seven_bit: bool) -> dict[str, Any]:
    """``quantize_dynamic``'s arguments for crossrank's int8, for the export and ``dtype="auto"``'s probe alike."""
    import onnx
    from onnxruntime.quantization import QuantType

    return {
        "weight_type": QuantType.QInt8,
        "per_channel": True,  # one scale per output column: Spearman 0.99 to fp32 where one per tensor gives 0.96
        "reduce_range": seven_bit,
        # Shape inference cannot type the outputs of the fused (contrib) operators: they are float.
        "extra_options": {"DefaultTensorType": onnx.TensorProto.FLOAT},
    }


def _lean_quantize(original: Any, q_type: int, array: Any, scale: Any, zero_point: Any, low: Any, high: Any) -> Any:
    """onnxruntime's ``quantize_nparray`` with one float32 temporary where it makes four.

    ``(array / scale).round() + zero_point`` allocates a copy per operation: on the 1 GB embedding matrix of
    m3-shape, 5 GB. The same operations in place give the same bytes where they run in float32 (else the
    original runs).
    """
    from onnxruntime.quantization.quant_utils import ONNX_TYPE_TO_NP_TYPE, get_qmin_qmax_for_qType

    dtype = ONNX_TYPE_TO_NP_TYPE.get(q_type)
    if dtype is None or not np.issubdtype(dtype, np.integer) or q_type not in (2, 3):  # UINT8, INT8
        return original(q_type, array, scale, zero_point, low, high)
    if np.result_type(np.float32, np.asarray(scale), np.asarray(zero_point)) != np.float32:
        return original(q_type, array, scale, zero_point, low, high)
    qmin, qmax = get_qmin_qmax_for_qType(q_type, reduce_range=False, symmetric=False)
    values = np.array(array, dtype=np.float32)  # a copy: the caller's array stays as it was
    np.divide(values, scale, out=values)
    np.round(values, out=values)
    np.add(values, zero_point, out=values)
    np.clip(
        values, max(qmin, low) if low is not None else qmin, min(qmax, high) if high is not None else qmax, out=values
    )
    return values.astype(dtype)


def _step_save(*, source: str, target: str, external: bool) -> None:
    """Store the final graph as ``target`` (weights in ``<target>.data`` when external)."""
    import onnx

    model = onnx.load(source, load_external_data=True)
    onnx.save_model(
        model,
        target,
        save_as_external_data=external,
        all_tensors_to_one_file=True,
        location=f"{Path(target).name}.data",
    )


def _peak_bytes() -> int:
    """This process's peak resident memory (0 where the platform does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS counts bytes, Linux KiB


class _Collected(logging.Handler):
    """Keeps the step's log records, for the calling process to log as its own."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.name, record.levelno, record.getMessage()))


def main(argv: list[str]) -> int:
    """The child's side of ``ExportSteps``: run each step whose request file names a line of standard input, write
    its answer, then a byte to the file descriptor ``argv[0]``; exit when the input closes."""
    logs = _Collected()
    root = logging.getLogger("crossrank")
    root.addHandler(logs)
    root.setLevel(logging.INFO)
    with os.fdopen(int(argv[0]), "wb", buffering=0) as ready:
        for line in sys.stdin:
            request = json.loads(Path(line.strip()).read_text())
            logs.records = []
            reply = _answer(request)
            reply["logs"] = logs.records
            reply["peak_bytes"] = _peak_bytes()
            Path(request["answer"]).write_text(json.dumps(reply))
            ready.write(b"\n")
    return 0


def _answer(request: dict[str, Any]) -> dict[str, Any]:
    try:
        return {"result": globals()[f"_step_{request['step']}"](**request["args"])}
    except OSError as exc:
        error: dict[str, Any] = {"kind": "os", "errno": exc.errno, "message": exc.strerror or str(exc)}
        if exc.filename is not None:
            error["filename"] = str(exc.filename)
        return {"error": error}
    except CrossrankError as exc:
        return {"error": {"kind": type(exc).__name__, "message": exc.message, "fix": exc.fix}}
    except Exception as exc:  # the steps run torch's, transformers' and onnxruntime's code: any type can come
        return {"error": {"kind": "other", "message": f"{type(exc).__name__}: {exc}"}}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
