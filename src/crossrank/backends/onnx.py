"""OnnxBackend: the model exported to ONNX and run by onnxruntime (the only onnxruntime importer).

The first load exports the model (torch, ``backends/export.py``), fuses attention, GELU and
LayerNorm with onnxruntime's transformer optimizer, optionally quantizes the weights to int8, checks
the graph against torch on a sample (each step in a process of its own, after a check that there is
memory for the largest: ``backends/onnx_export.py``), and stores it in a folder next to the model, named by a key of
the weight files, the options and the library versions. Later loads reuse it once its files match the
sizes and hashes its manifest records (else it is made again); a change to any of
those makes a new one, and making one deletes the exports that will not be used again (of other
weights, or of a model folder that is gone) or have not been for 30 days. An unwritable model
folder falls back to ``~/.cache/crossrank/onnx``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from crossrank.backends.base import EncodedBatch
from crossrank.backends.cpu import cpu_flags, int8_needs_7bit_weights
from crossrank.backends.onnx_export import ExportSteps, available_memory, check_export_memory, export_steps
from crossrank.backends.onnx_probe import measured_onnx_mode
from crossrank.config import BatchingOptions, RuntimeOptions
from crossrank.errors import BackendError, ConfigError, InferenceError
from crossrank.paths import cache_folder

__all__ = ["EXPORT_FORMAT", "OnnxBackend", "export_folder"]

_log = logging.getLogger(__name__)

# Bump when the export or optimisation steps change, so old exports are not reused.
EXPORT_FORMAT = 2
_MODEL_FILE = "model.onnx"
_MANIFEST = "crossrank-export.json"
# Model types whose graphs onnxruntime's BERT optimizer fuses (attention, GELU, LayerNorm).
_BERT_LIKE = {"bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert", "mpnet"}
# An fp32 graph must give torch's logits to this tolerance, else the optimized graph is not used.
_FP32_TOLERANCE = 1e-3
# An export of a model that has not been used for this long is deleted when another of that model is made.
_UNUSED_DAYS = 30
# The files an export consists of (the data file only when the weights are stored outside the graph).
_EXPORT_FILES = (_MODEL_FILE, f"{_MODEL_FILE}.data")
# How much of each end of an export file its recorded hash covers.
_HASHED_END = 1 << 20


def _file_facts(path: Path) -> dict[str, Any]:
    """A file's size and the sha256 of its size, first MiB and last MiB (of all of it when it is smaller).

    Reading a multi-gigabyte graph on every load would cost seconds; this costs two reads of 1 MiB and still
    catches what damages an export in practice: a truncated or half-copied file (size), another export or file
    put in its place, and a file rewritten from the start (the graph's header, names and first weights) or cut
    at the end. It does not catch a few bytes flipped in the middle of the weights, nor anyone who can write the
    folder (they can rewrite the manifest too): the export is as trusted as the model folder beside it.
    """
    size = path.stat().st_size
    digest = hashlib.sha256(size.to_bytes(8, "little"))
    with path.open("rb") as handle:
        if size <= 2 * _HASHED_END:
            digest.update(handle.read())
        else:
            digest.update(handle.read(_HASHED_END))
            handle.seek(size - _HASHED_END)
            digest.update(handle.read(_HASHED_END))
    return {"size": size, "sha256_ends": digest.hexdigest()}


def _export_files(folder: Path) -> dict[str, dict[str, Any]]:
    """What the manifest records of an export's files (see ``_file_facts``)."""
    return {name: _file_facts(folder / name) for name in _EXPORT_FILES if (folder / name).is_file()}


def _damage(folder: Path) -> str | None:
    """Why the finished export in ``folder`` cannot be reused (its files differ from its manifest), or None."""
    try:
        recorded = json.loads((folder / _MANIFEST).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return "its manifest is unreadable"
    if not isinstance(recorded, dict) or _MODEL_FILE not in recorded:
        return "its manifest records no file sizes and hashes (an export by an older crossrank)"
    try:
        present = _export_files(folder)
    except OSError as exc:
        return f"its files cannot be read ({exc.strerror})"
    problems = (_file_damage(name, recorded.get(name), present.get(name)) for name in _EXPORT_FILES)
    return next((problem for problem in problems if problem is not None), None)


def _file_damage(name: str, want: object, got: dict[str, Any] | None) -> str | None:
    """How one export file differs from its manifest's record, or None (both absent counts as a match)."""
    if want is None and got is None:
        return None
    if got is None:
        return f"{name} is missing"
    if not isinstance(want, dict):
        return f"{name} is not in its manifest"
    if got["size"] != want.get("size"):
        return f"{name} is {got['size']} bytes where the manifest says {want.get('size')}"
    if got["sha256_ends"] != want.get("sha256_ends"):
        return f"{name}'s content differs from the hash in the manifest"
    return None


def _versions() -> dict[str, str]:
    names = ("onnxruntime", "onnx", "torch", "transformers")
    return {name: importlib.metadata.version(name) for name in names}


def export_folder(source: dict[str, Any], *, quantize: str) -> str:
    """The export's folder name: a key of the model's files (``{"model": digest}``), the options and the versions."""
    key = {"format": EXPORT_FORMAT, "quantize": quantize, **source, "versions": _versions()}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return f"onnx-{quantize if quantize != 'none' else 'fp32'}-{digest}"


def _writable_root(model_dir: Path) -> Path:
    beside = model_dir / ".crossrank"
    try:
        beside.mkdir(exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=beside, prefix=".probe-")  # noqa: SIM115  # closed just below
        probe.close()
    except OSError:
        fallback = cache_folder("onnx")
        _log.info("%s is not writable; keeping the ONNX export in %s", model_dir, fallback)
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback
    return beside


def _prune(root: Path, model_dir: Path, source: dict[str, Any], *, keep: Path) -> None:
    """Delete the exports in ``root`` that will not be used again, or not soon: those of a model folder that is
    gone, those of ``model_dir`` made from other weights, and those of ``model_dir`` unused for ``_UNUSED_DAYS``
    (another environment's versions, other options). Each is made again if asked for."""
    cutoff = time.time() - _UNUSED_DAYS * 86400
    for folder in root.glob("onnx-*"):
        manifest = folder / _MANIFEST
        if folder == keep or not manifest.is_file():
            continue
        try:
            facts = json.loads(manifest.read_text())
            used = manifest.stat().st_mtime
        except (OSError, ValueError):
            continue
        model = Path(str(facts.get("model", "")))
        if not model.is_absolute():
            continue  # written by a crossrank that kept the path as given: which folder it means is unknown
        if not model.is_dir():
            reason = "its model folder is gone"
        elif model != model_dir:
            continue
        elif facts.get("source", source) != source:
            reason = "made from other weights"
        elif used < cutoff:
            reason = f"unused for {_UNUSED_DAYS} days"
        else:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        _log.info("deleted the ONNX export %s: %s", folder, reason)


def _session_options(runtime: RuntimeOptions) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # One graph runs at a time: all threads go to the operators (default: one per physical core).
    options.inter_op_num_threads = 1
    if runtime.num_threads is not None:
        options.intra_op_num_threads = runtime.num_threads
    return options


def _providers(device: str) -> tuple[str, list[Any]]:
    available = ort.get_available_providers()
    if device == "auto":
        device = "cuda" if "CUDAExecutionProvider" in available else "cpu"
    if device == "cpu":
        return "cpu", ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        raise ConfigError(
            f"device {device!r} asked for, but this onnxruntime has no CUDA provider ({', '.join(available)})",
            fix="pip install onnxruntime-gpu (instead of onnxruntime), or use backend='torch' on the GPU",
        )
    index = int(device.partition(":")[2] or 0)
    return f"cuda:{index}", [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


def _open(path: Path, options: ort.SessionOptions, providers: list[Any]) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime's errors share no base class but Exception
        raise BackendError(
            f"onnxruntime could not load {path}: {exc}", fix=f"delete {path.parent} to export the model again"
        ) from exc


class OnnxBackend:
    """Runs the model's ONNX export with onnxruntime, in float32 or with int8 weights.

    Accepts the same options as the torch backend where they apply: ``device`` ``cpu`` (or CUDA
    with onnxruntime-gpu), ``num_threads``; ``dtype`` must be ``auto`` or ``float32``. ``quantize='int8'``
    runs int8; on a CPU, ``dtype='auto'`` (with ``quantize='none'``) runs int8 where it was measured faster than
    float32 for the model's shape and the model's family passed int8's accuracy gate (``backends/onnx_probe.py``),
    else float32. Logits come back as float32.
    """

    name = "onnx"

    def __init__(
        self,
        model_dir: Path,
        *,
        runtime: RuntimeOptions,
        allow_pickle: bool,
        trust_remote_code: bool,
        model_digest: str,
    ) -> None:
        if runtime.dtype not in ("auto", "float32"):
            raise ConfigError(
                f"backend='onnx' runs float32 or int8, not {runtime.dtype}",
                fix="use dtype='auto' (and quantize='int8' for speed on CPU), or backend='torch' for half precision",
            )
        self.device, providers = _providers(runtime.device)
        options = _session_options(runtime)
        seven_bit = int8_needs_7bit_weights(cpu_flags(), platform.machine())
        # dtype="auto" on CPU: float32 or int8, as measured (nothing is measured where quantize or dtype is given).
        self.cpu_mode = (
            measured_onnx_mode(model_dir, options=options, seven_bit=seven_bit)
            if runtime.dtype == "auto" and runtime.quantize == "none" and self.device == "cpu"
            else None
        )
        self.quantize = "int8" if self.cpu_mode is not None and self.cpu_mode.mode == "int8" else runtime.quantize
        self.dtype = "int8" if self.quantize == "int8" else "float32"
        # int8 runs each pair alone, without padding (see _unpadded_row).
        self.runs_pairs_alone = self.quantize == "int8"
        # The CPU defaults; with onnxruntime-gpu too, whose memory onnxruntime's own arena manages.
        self.batching = BatchingOptions()
        # An export made for a CPU with VNNI would score less exactly on one without: the scheme is in its key.
        self._scheme = "int8-7bit" if self.quantize == "int8" and seven_bit else self.quantize
        self._model_dir = model_dir
        # What the export is made from (crossrank.models.identity: weight headers and tensor edges, config, tokenizer).
        self._source = {"model": model_digest}
        self._allow_pickle = allow_pickle
        self._trust_remote_code = trust_remote_code
        path, reused = self._exported()
        try:
            self._session = _open(path, options, providers)
        except BackendError as exc:
            if not reused:
                raise
            # A damaged export (a half-copied folder, a disk error since) is made again, once.
            _log.warning("%s; exporting the model again", exc.message)
            shutil.rmtree(self._folder, ignore_errors=True)
            self._session = _open(self._exported()[0], options, providers)
        self._inputs = tuple(item.name for item in self._session.get_inputs())

    @property
    def export_path(self) -> Path:
        """The ``.onnx`` file this backend runs."""
        return self._folder / _MODEL_FILE

    def _exported(self) -> tuple[Path, bool]:
        """The export's path, made now unless a finished one is there; and whether it was there."""
        source = self._source
        name = export_folder(source, quantize=self._scheme)
        root = _writable_root(self._model_dir)
        self._folder = root / name
        if (self._folder / _MANIFEST).is_file():
            damage = _damage(self._folder)
            if damage is None:
                _log.info("reusing the ONNX export in %s", self._folder)
                with contextlib.suppress(OSError):
                    os.utime(self._folder / _MANIFEST)  # last used now (pruning spares exports in use)
                return self.export_path, True
            _log.warning("not reusing the ONNX export in %s: %s; exporting the model again", self._folder, damage)
        # A folder without its manifest is an export that never finished (or was tampered with).
        shutil.rmtree(self._folder, ignore_errors=True)
        check_export_memory(self._model_dir, available_memory())
        work = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}-"))
        try:
            with export_steps(work, self._model_dir) as steps:
                manifest = {**self._build(steps, work, source), "files": _export_files(work)}
            (work / _MANIFEST).write_text(json.dumps(manifest, indent=2))
            # mkdtemp and onnx make it private; the export is as readable as the model it comes from.
            work.chmod(0o755)
            for item in work.iterdir():
                item.chmod(0o644)
            try:
                work.rename(self._folder)
            except OSError:
                if not (self._folder / _MANIFEST).is_file():
                    raise
                _log.info("another process exported to %s first; using that one", self._folder)
            _prune(root, self._model_dir.resolve(), source, keep=self._folder)
        except OSError as exc:
            raise BackendError(
                f"could not write the ONNX export to {root}: {exc}",
                fix=f"free disk space in {root} (an fp32 export takes about the size of the weights), "
                "or make the model folder writable",
            ) from exc
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return self.export_path, False

    def _build(self, steps: ExportSteps, work: Path, source: dict[str, Any]) -> dict[str, Any]:
        """Export, optimise, quantize and check in ``work``; returns the manifest (naming ``source``).

        The steps run in child processes (``backends/onnx_export.py``).
        """
        exported = work / "exported.onnx"
        graph = steps.run(
            "export",
            model_dir=str(self._model_dir),
            target=str(exported),
            allow_pickle=self._allow_pickle,
            trust_remote_code=self._trust_remote_code,
        )
        external = bool(graph["external_data"])
        check = str(exported.with_suffix(".check.npz"))
        fused: dict[str, int] = {}
        best = exported
        if graph["model_type"] in _BERT_LIKE:
            optimized = work / "optimized.onnx"
            options = {"num_heads": graph["num_heads"], "hidden_size": graph["hidden_size"]}
            fused = steps.run("optimize", source=str(exported), target=str(optimized), **options)
            if fused and self._matches(steps, optimized, check):
                best = optimized
            elif fused:
                _log.warning("the optimized ONNX graph differs from torch; using the plain export instead")
                fused = {}
        if not fused and not self._matches(steps, best, check):
            raise BackendError(
                f"the ONNX export of {self._model_dir} does not reproduce the torch model's scores",
                fix="use backend='torch' for this model",
            )
        if self.quantize == "int8":
            int8 = work / "int8.onnx"
            steps.run(
                "quantize",
                source=str(best),
                target=str(int8),
                external=external,
                seven_bit=self._scheme == "int8-7bit",
            )
            best = int8
        steps.run("save", source=str(best), target=str(work / _MODEL_FILE), external=external)
        for stale in work.iterdir():
            if stale.name not in _EXPORT_FILES:
                stale.unlink() if stale.is_file() else shutil.rmtree(stale)
        return {
            "format": EXPORT_FORMAT,
            "model": str(self._model_dir.resolve()),
            "source": source,
            "quantize": self._scheme,
            "fused_operators": fused,
            "inputs": graph["inputs"],
            "versions": _versions(),
        }

    @staticmethod
    def _matches(steps: ExportSteps, path: Path, check: str) -> bool:
        """Whether the graph at ``path`` gives torch's logits on the check feeds."""
        error = float(steps.run("check", graph=str(path), check=check))
        _log.info("ONNX graph %s: largest logit difference to torch %.2e", path.name, error)
        return error <= _FP32_TOLERANCE

    def forward(self, batch: EncodedBatch) -> npt.NDArray[np.float32]:
        """Score a batch; returns one float32 logit per pair."""
        feeds = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if "token_type_ids" in self._inputs:
            types = batch.token_type_ids
            feeds["token_type_ids"] = np.zeros_like(batch.input_ids) if types is None else types
        try:
            if self.runs_pairs_alone:
                logits = np.concatenate([self._run(_unpadded_row(feeds, row)) for row in range(batch.size)])
            else:
                logits = self._run(feeds)
        except Exception as exc:  # onnxruntime's errors share no base class but Exception
            raise InferenceError(f"onnxruntime failed on a batch of {batch.size} pairs: {exc}") from exc
        result: npt.NDArray[np.float32] = np.ascontiguousarray(logits[:, 0], dtype=np.float32)
        return result

    def _run(self, feeds: dict[str, npt.NDArray[np.int64]]) -> npt.NDArray[np.float32]:
        logits: npt.NDArray[np.float32] = self._session.run(["logits"], feeds)[0]
        return logits

    def close(self) -> None:
        """Drop the session and its memory."""
        self._session = None


def _unpadded_row(feeds: dict[str, npt.NDArray[np.int64]], row: int) -> dict[str, npt.NDArray[np.int64]]:
    """One pair of a right-padded batch, without its padding.

    Dynamic int8 quantizes each activation tensor with one scale taken from its whole range, so in a
    batch a pair's score would depend on its batch mates and on the padding: run alone, it depends on
    the pair only. Measured on 2 AVX2 cores: as fast as padded batches of 8 on the m3-sized model,
    about 20% slower on MiniLM-sized models with short pairs.
    """
    length = int(feeds["attention_mask"][row].sum())
    return {name: value[row : row + 1, :length] for name, value in feeds.items()}
