"""Inference runtimes through the real pieces: a version trained with torch is exported to ONNX
(and int8) with its sha256 in the MLflow lineage, the promotion gate checks each runtime against
torch on the golden set, and scoring runs the first verified one (ONNX Runtime and OpenVINO for
real); a runtime that moves a decision rate is refused, a replaced file is never loaded."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_training_lifecycle import CFG, NAME, SMALL, _dataset

from andon.models import runtimes
from andon.storage import open_store
from andon.synth.plant import synthesize_plant

pytestmark = pytest.mark.integration

RUNTIMES = ("openvino-bf16", "onnxruntime-int8", "onnxruntime-fp32", "torch")
RECIPE = SMALL.with_overrides({"inference": {"quantize": True, "calibration_images": 32, "runtimes": list(RUNTIMES)}})
PLANT = CFG.model_copy(update={"recipe": RECIPE})


@pytest.mark.slow
def test_exported_runtimes_are_gated_against_torch_and_serve(andon_home: Path, mlflow_tracking_uri: str) -> None:
    from andon.lifecycle.promotion import promote
    from andon.lifecycle.registry import version_info
    from andon.scoring.batch import Champion, score_batch
    from andon.training.run import load_version, train_plant

    store = open_store()
    out = train_plant(store, PLANT, [_dataset(store, 5)], recipe=RECIPE)
    info = version_info(NAME, out.version or 0)
    for name, tag in runtimes.FILE_TAGS.items():  # both files pinned in the version's lineage
        assert len(info.tags[tag]) == 64, name
    loaded = load_version(NAME, out.version or 0)
    assert loaded.root is not None
    assert runtimes.sha256_of(loaded.root / "inference" / "model.onnx") == info.tags["inference.onnx.sha256"]

    promote(store, PLANT, force=True, reason="test")
    tags = version_info(NAME, out.version or 0).tags
    checked = json.loads(tags[runtimes.CHECKED_TAG])
    verified = tags[runtimes.VERIFIED_TAG].split(",")
    assert verified[-1] == "torch" and "onnxruntime-fp32" in verified, checked  # fp32 decides as torch does
    assert checked["onnxruntime-fp32"]["escape_moved"] == 0 and checked["onnxruntime-fp32"]["overkill_moved"] == 0
    for runtime in RUNTIMES[:-1]:
        assert checked[runtime]["verdict"] in ("verified", "refused"), (runtime, checked[runtime])
        assert (runtime in verified) == (checked[runtime]["verdict"] == "verified")

    champion = Champion.load(PLANT)
    assert champion.runtime == verified[0] != "torch"
    (batch,) = synthesize_plant(
        PLANT, store, 24, seed=23, start=datetime(2026, 11, 12, 11, tzinfo=UTC), lines=["line-1"], workers=1
    )
    summary = score_batch(store, PLANT, batch.prefix, explain=True)
    assert summary.scored == 24 and summary.errors == 0
    # the runtime's probabilities are torch's, within what bf16 / int8 rounding allows
    images = np.stack([champion.model_input(store.get(o.key)) for o in store.list(f"{batch.prefix}/images/")])
    fast, _ = champion.predict(images)
    torch_probs, _ = loaded.predict(images)
    assert np.abs(fast - torch_probs).max() < 0.05


def test_a_replaced_onnx_file_is_never_loaded(andon_home: Path, mlflow_tracking_uri: str) -> None:
    from andon.errors import IntegrityError
    from andon.training.run import load_version, train_plant

    store = open_store()
    out = train_plant(store, PLANT, [_dataset(store, 6, parts=200)], recipe=SMALL)  # fp32 only
    loaded = load_version(NAME, out.version or 0)
    assert loaded.root is not None
    with pytest.raises(runtimes.RuntimeUnavailable, match=r"no inference/model\.int8\.onnx"):
        loaded.runner("onnxruntime-int8")
    onnx_file = loaded.root / "inference" / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:-16] + b"\0" * 16)
    with pytest.raises(IntegrityError, match="does not match its lineage"):
        loaded.runner("onnxruntime-fp32")


class _Flipped:
    """A runtime that decides the opposite way (a boundary faked to prove the gate can refuse)."""

    name = "onnxruntime-fp32"

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = np.where(x.reshape(len(x), -1).mean(1) > -9, 0.9, 0.1)  # every part called a defect
        return np.stack([1 - p, p], 1).astype(np.float32), np.zeros((len(x), 8), np.float32)


def test_the_gate_refuses_a_runtime_that_moves_a_decision_rate() -> None:
    from andon.lifecycle.promotion import check_runtimes
    from andon.quality import OperatingPoint

    class Loaded:
        classes = ("ok", "defect")
        operating_point = OperatingPoint(0.5, chosen_on="test")

        def runner(self, runtime: str) -> Any:
            if runtime == "openvino-bf16":
                raise runtimes.RuntimeUnavailable("openvino-bf16: not here")
            return _Flipped()

        def predict(self, images: np.ndarray, runner: Any = None) -> tuple[np.ndarray, np.ndarray]:
            probs = runner.run(images)[0]
            return probs, probs[:, 1]

    class Data:
        images = np.zeros((20, 8, 8), np.uint8)
        labels = np.array([0] * 15 + [1] * 5)

    reference = {"escape_rate": 0.0, "overkill_rate": 0.0}
    verified, checked = check_runtimes(PLANT, Loaded(), Data(), reference)
    assert verified == ["torch"]
    assert checked["openvino-bf16"]["verdict"] == "unavailable"
    assert checked["onnxruntime-fp32"]["verdict"] == "refused" and checked["onnxruntime-fp32"]["overkill_moved"] == 1.0


@pytest.mark.parametrize("kind", ["patchcore", "either"])
def test_anomaly_models_export_and_decide_alike_in_every_runtime(tmp_path: Path, kind: str) -> None:
    """PatchCore's memory-bank search and the either-model exported whole (batch axis dynamic; the
    runner feeds at most ANOMALY_MAX_BATCH parts per pass, so memory stays bounded)."""
    import torch

    from andon.models import build_model, either_model, mid_features, patchcore_model

    torch.manual_seed(0)
    backbone = build_model("small_cnn", 1, 2, 8).eval()
    with torch.no_grad():
        dim = sum(f.shape[1] for f in mid_features(backbone, torch.zeros(1, 1, 64, 64), (4, 8)))
    anomaly = patchcore_model(backbone, dim, 200, (4, 8))
    anomaly.memory.normal_()
    anomaly.center.fill_(3.0)
    model = anomaly if kind == "patchcore" else either_model(build_model("small_cnn", 1, 2, 8).eval(), anomaly)
    images = np.random.default_rng(0).integers(0, 255, (10, 64, 64), dtype=np.uint8)
    path = tmp_path / "model.onnx"
    runtimes.export_onnx(model.eval(), images[:2], path)
    expected, _ = runtimes.TorchRunner(model).run(images)
    for runner in (
        runtimes.OnnxRuntimeRunner("onnxruntime-fp32", path, 2, runtimes.ANOMALY_MAX_BATCH),
        runtimes.OpenVinoRunner("openvino-fp32", path, 2, runtimes.ANOMALY_MAX_BATCH),
    ):
        got, emb = runner.run(images)
        assert got.shape == (10, 2) and emb.shape == (10, 8)
        assert np.abs(got - expected).max() < 1e-4, runner.name


def test_a_graph_that_bakes_in_the_traced_batch_size_is_refused_at_export(tmp_path: Path) -> None:
    import torch
    from torch import nn

    class Baked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bias = nn.Parameter(torch.tensor([1.0, -1.0]))

        def features(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(1, 2, 3))[:, None].expand(len(x), 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bias.expand(len(x), 2) + x.mean() * 0  # len(x) becomes a constant when traced

    images = np.zeros((2, 16, 16), np.uint8)
    with pytest.raises(runtimes.ExportError, match="batch of 3"):
        runtimes.export_onnx(Baked().eval(), images, tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()
