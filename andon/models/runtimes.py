"""Inference runtimes: a registered image version also carries its network exported to ONNX
(``andon/inference/model.onnx``, and with ``inference.quantize`` an int8 copy calibrated on the
version's own training images), each pinned by its sha256 in the version's lineage. Scoring,
``andon serve`` and the governance matrix run the first runtime of the recipe's
``inference.runtimes`` that this machine has, that the promotion gate verified for the version
(its escape and overkill on the golden set within ``inference.max_rate_change`` of torch's), and
that loads; else torch. Explanations keep the torch network (they need gradients).

    openvino-bf16      OpenVINO on the fp32 ONNX file, bf16 where the CPU has it (AMX): fastest here
    openvino-int8      OpenVINO on the int8 (QDQ) file
    openvino-fp32      OpenVINO, fp32
    onnxruntime-int8   ONNX Runtime on the int8 file
    onnxruntime-fp32   ONNX Runtime, fp32
    torch              the folded torch network (always there)

Every runner takes the model inputs as the camera gives them, ``uint8 (N, H, W)``
(``andon.imaging.model_input``), normalizes them inside the exported graph exactly as training did
(``andon.training.loop.to_tensor``) and returns ``(probabilities (N, classes), embedding (N, 8))``,
what the prediction log records.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from andon.errors import ConfigError, IntegrityError

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

RUNTIMES = ("openvino-bf16", "openvino-int8", "openvino-fp32", "onnxruntime-int8", "onnxruntime-fp32", "torch")
FOLDER = "inference"  # under the version's andon/ artifacts
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
FILE_TAGS = {FP32_FILE: "inference.onnx.sha256", INT8_FILE: "inference.onnx_int8.sha256"}
VERIFIED_TAG = "inference.verified"  # the runtimes the gate found equivalent, comma-separated
CHECKED_TAG = "inference.checked"  # what the gate measured per runtime (JSON)
EMBEDDING_DIMS = 8
ANOMALY_MAX_BATCH = 4  # an anomaly model's exported graph compares every patch at once: bounded memory


class RuntimeUnavailable(ConfigError):
    """A runtime this machine or this version cannot run (not installed, no exported file)."""


class ExportError(ConfigError):
    """A network the exporter cannot turn into a graph that computes the same (torch serves it)."""


class Runner(Protocol):
    name: str

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def usable_cores() -> int:
    """The CPUs this process may run on (a container's or a pinned process's, not the host's)."""
    import os

    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no affinity call on this platform
        return os.cpu_count() or 1


def engine(runtime: str) -> str:
    return runtime.split("-")[0]


def precision(runtime: str) -> str:
    return runtime.split("-")[1] if "-" in runtime else "fp32"


def file_for(runtime: str) -> str | None:
    """The exported file a runtime runs (None: torch)."""
    if runtime == "torch":
        return None
    return INT8_FILE if precision(runtime) == "int8" else FP32_FILE


def installed(runtime: str) -> bool:
    """Whether this machine has the runtime's engine (no import: ``andon --help`` stays fast)."""
    name = engine(runtime)
    return name == "torch" or importlib.util.find_spec(name) is not None


class _Head:
    """What a runner computes, as one module for the exporter: the training normalization of
    ``uint8 (N, H, W)`` inputs, softmax of the logits and the first ``EMBEDDING_DIMS`` features
    (drift embeddings), exactly as the torch path does."""

    @staticmethod
    def build(model: nn.Module) -> nn.Module:
        import torch
        from torch import nn

        from andon.training.loop import PREPROCESSING

        scale, mean, std = (float(PREPROCESSING[k]) for k in ("scale", "mean", "std"))

        class Head(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                x = (images.unsqueeze(1).float() * scale - mean) / std
                feats = self.model.features(x)  # type: ignore[operator]
                logits = self.model.head(feats) if hasattr(self.model, "head") else self.model(x)  # type: ignore[operator]
                return torch.softmax(logits, dim=1), feats[:, :EMBEDDING_DIMS]

        return Head().eval()


def export_onnx(model: nn.Module, example: np.ndarray, path: Path) -> str:
    """Export an eval-mode image network taking ``uint8 (N, H, W)`` (``example``; the batch axis
    dynamic); returns the file's sha256. The file is checked before it is kept: ONNX Runtime on a
    batch of another size than the one traced must give torch's probabilities (a network that
    bakes the traced batch size into its graph is refused here, not at serving)."""
    import warnings

    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated, still the one without onnxscript
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Head.build(model.eval()), (torch.from_numpy(example[:2]),), str(path), dynamo=False,
            input_names=["x"], output_names=["probs", "emb"], opset_version=17,
            dynamic_axes={"x": {0: "n"}, "probs": {0: "n"}, "emb": {0: "n"}},
        )  # fmt: skip
    if installed("onnxruntime-fp32"):
        import numpy as np

        probe = np.concatenate([example] * 3)[:3]  # not the traced batch size
        expected, _ = TorchRunner(model).run(probe)
        try:
            got, _ = OnnxRuntimeRunner("onnxruntime-fp32", path, 1, 1 << 16).run(probe)
        except Exception as exc:  # ONNX Runtime's own errors: the graph does not run at this size
            path.unlink(missing_ok=True)
            raise ExportError(f"the exported graph does not run on a batch of 3: {exc}") from None
        if got.shape != expected.shape or float(np.abs(got - expected).max()) > 1e-3:
            path.unlink(missing_ok=True)
            raise ExportError("the exported graph does not compute what the network does on a batch of 3")
    return sha256_of(path)


def quantize_int8(src: Path, dst: Path, calibration: np.ndarray, batch: int = 32) -> str:
    """An int8 copy of ``src`` (static QDQ: convolutions and linear layers; softmax and the anomaly
    model's distances stay float), activation ranges from ``calibration`` (``uint8`` model inputs of
    the version's own training split). Returns the file's sha256."""
    import logging

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"x": calibration[i : i + batch]} for i in range(0, len(calibration), batch)])

        def get_next(self) -> dict[str, Any] | None:
            return next(self.batches, None)

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer's advice ("consider pre-processing") is not a problem
    try:
        quantize_static(
            str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            op_types_to_quantize=["Conv", "Gemm"], activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )  # fmt: skip
    finally:
        root.setLevel(level)
    return sha256_of(dst)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class TorchRunner:
    model: Any  # the folded network (andon.models.optimize_for_inference)
    name: str = "torch"

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        from andon.training.loop import to_tensor

        with torch.inference_mode():
            t = to_tensor(x).contiguous(memory_format=torch.channels_last)
            feats = self.model.features(t)
            logits = self.model.head(feats) if hasattr(self.model, "head") else self.model(t)
            return torch.softmax(logits, dim=1).numpy(), feats[:, :EMBEDDING_DIMS].numpy()


class OnnxRuntimeRunner:
    def __init__(self, name: str, path: Path, threads: int, max_batch: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        opts.add_session_config_entry(
            "session.intra_op.allow_spinning", "0"
        )  # idle threads sleep: the cores are shared
        self.name, self.max_batch = name, max_batch
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _chunked(x, self.max_batch, lambda a: tuple(self.session.run(None, {"x": a})))


class OpenVinoRunner:
    def __init__(self, name: str, path: Path, threads: int, max_batch: int) -> None:
        import openvino as ov

        core = ov.Core()
        hint = "bf16" if precision(name) == "bf16" else "f32"  # int8 files run their int8 kernels either way
        self.name, self.max_batch = name, max_batch
        self.compiled = core.compile_model(
            core.read_model(str(path)), "CPU",
            # not pinned to cores: they are shared with decoding and HTTP threads (pinned: p99 39 ms vs 12 ms
            # for two parts next to one busy thread, benchmarks/inference.py's machine)
            {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
             "ENABLE_CPU_PINNING": False},
        )  # fmt: skip
        self._local = threading.local()  # an infer request per thread: a request is not thread-safe

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        req = getattr(self._local, "req", None)
        if req is None:
            req = self._local.req = self.compiled.create_infer_request()

        def one(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            out = req.infer({0: a})
            return out[self.compiled.output(0)].copy(), out[self.compiled.output(1)].copy()

        return _chunked(x, self.max_batch, one)


def _chunked(x: np.ndarray, max_batch: int, fn: Any) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    if len(x) <= max_batch:
        return fn(np.ascontiguousarray(x))
    parts = [fn(np.ascontiguousarray(x[i : i + max_batch])) for i in range(0, len(x), max_batch)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def open_runner(
    runtime: str, folder: Path | None, fast_model: Any, tags: dict[str, str], *, threads: int = 0, anomaly: bool = False
) -> Runner:
    """The runner ``runtime`` for a version whose ``andon/`` artifacts are in ``folder``; its file's
    sha256 is checked against ``tags`` (the lineage) before it is loaded. Raises
    :class:`RuntimeUnavailable` with the reason when it cannot run here."""

    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
    if runtime == "torch":
        return TorchRunner(fast_model)
    if not installed(runtime):
        raise RuntimeUnavailable(f"{runtime}: {engine(runtime)} is not installed (pip install 'andon[platform]')")
    name = file_for(runtime)
    assert name is not None
    path = folder / FOLDER / name if folder is not None else None
    if path is None or not path.exists() or not tags.get(FILE_TAGS[name]):
        raise RuntimeUnavailable(f"{runtime}: the version has no {FOLDER}/{name} (exported at training)")
    if sha256_of(path) != tags[FILE_TAGS[name]]:
        raise IntegrityError(f"{runtime}: {FOLDER}/{name} does not match its lineage's sha256; refusing to load it")
    max_batch = ANOMALY_MAX_BATCH if anomaly else 1 << 16
    if engine(runtime) == "openvino":
        # every core, whatever was asked: compiled for latency, OpenVINO runs one call at a time,
        # so calls from several threads on one thread each would share a single core
        return OpenVinoRunner(runtime, path, min(usable_cores(), 8), max_batch)
    return OnnxRuntimeRunner(runtime, path, threads or min(usable_cores(), 8), max_batch)
