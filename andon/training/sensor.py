"""The sensor model: machine failure from process readings (AI4I 2020 style), a torch MLP on
standardized features with one sigmoid head per failure type (multi-label: a machine can fail
for two reasons at once). Registered as ``<plant>.machine-failure`` with the same lineage rules
as the vision models; the table it learned from is stored content-addressed in the object store.

Holding failure types back (``hold_out``) trains a model that has never heard of them: the
"new failure type logged by maintenance" scenario, where the retrained model adds the type.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from andon.config import PlantConfig
from andon.data.datasets import build_manifest, save_manifest
from andon.errors import DataError
from andon.lifecycle.registry import (
    SENSOR_TASK,
    code_state,
    ensure_experiment,
    model_name,
)
from andon.storage import ObjectStore, join_key
from andon.training.data import split_of
from andon.training.run import TrainOutcome, environment, log_version

TASK = SENSOR_TASK
AI4I_FEATURES = (
    "Air temperature [K]",
    "Process temperature [K]",
    "Rotational speed [rpm]",
    "Torque [Nm]",
    "Tool wear [min]",
)
AI4I_TARGETS = ("TWF", "HDF", "PWF", "OSF", "RNF")


def store_table(store: ObjectStore, cfg: PlantConfig, path: Path) -> tuple[str, str]:
    """Upload a table file content-addressed; a one-object dataset version names it."""
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    key = join_key(cfg.object_prefix, "tables", f"{sha}{path.suffix}")
    if not store.exists(key):
        store.put(key, data, "text/csv")
    manifest = build_manifest(cfg.id, [{"key": key, "sha256": sha, "label": "table", "name": path.name}], [key])
    save_manifest(store, manifest)
    return manifest.id, key


def _features(frame: Any, features: tuple[str, ...]) -> Any:
    import numpy as np

    x = frame[list(features)].astype("float32").to_numpy()
    if "Type" in frame.columns:  # product quality variant, one-hot
        x = np.concatenate([x, np.stack([(frame["Type"] == t).to_numpy("float32") for t in "LMH"], axis=1)], axis=1)
    return x


def _best_threshold(y: Any, p: Any, beta: float = 2.0) -> float:
    """The probability cut with the best F-beta on ``(y, p)`` (beta 2: a missed failure costs
    more than a false alarm); 0.5 when the split has no positive."""
    import numpy as np

    if y.sum() == 0:
        return 0.5
    best, best_f1 = 0.5, -1.0
    for t in np.linspace(0.05, 0.95, 91):
        pred = p >= t
        tp = float((pred & (y > 0)).sum())
        b2 = beta * beta
        score = (1 + b2) * tp / max(1.0, float(pred.sum() + b2 * (y > 0).sum()))
        if score > best_f1:
            best, best_f1 = float(t), score
    return best


def train_sensor(
    store: ObjectStore,
    cfg: PlantConfig,
    manifest_id: str,
    *,
    spec_name: str = "ai4i2020",
    hold_out: tuple[str, ...] = (),
    epochs: int = 40,
    seed: int = 42,
    register: bool = True,
) -> TrainOutcome:
    import mlflow
    import numpy as np
    import pandas as pd
    import torch
    from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

    from andon.data.datasets import load_manifest
    from andon.models import build_model
    from andon.monitoring.sensor import sensor_reference
    from andon.training.loop import seed_everything
    from andon.validation.spec import load_table_spec
    from andon.validation.tables import validate_table

    t0 = time.perf_counter()
    manifest = load_manifest(store, cfg.id, manifest_id)
    (obj,) = manifest.objects
    frame = pd.read_csv(io.BytesIO(store.get(obj["key"])), encoding="utf-8-sig")
    report = validate_table(frame, load_table_spec(spec_name))
    if not report.success:
        raise DataError(f"the table fails its gate ({spec_name}): " + "; ".join(r.rule for r in report.failed))
    unknown = [t for t in hold_out if t not in AI4I_TARGETS]
    if unknown:
        raise DataError(f"unknown failure types {unknown}; known: {', '.join(AI4I_TARGETS)}")
    targets = tuple(t for t in AI4I_TARGETS if t not in hold_out)
    ids = frame["UDI"].astype(str).tolist()
    split = np.array([split_of(i, seed, 0.15, 0.15) for i in ids])
    x = _features(frame, AI4I_FEATURES)
    y = frame[list(targets)].to_numpy("float32")
    mean, std = x[split == "train"].mean(0), x[split == "train"].std(0) + 1e-6
    xs = (x - mean) / std

    seed_everything(seed)
    model = build_model("sensor_mlp", xs.shape[1], len(targets), width=16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    ytr = y[split == "train"]
    pos = ytr.sum(0)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(ytr) - pos) / np.maximum(pos, 1)))
    xt, yt = torch.from_numpy(xs[split == "train"]), torch.from_numpy(ytr)
    xv, yv = torch.from_numpy(xs[split == "val"]), torch.from_numpy(y[split == "val"])
    rng = np.random.default_rng(seed)
    best, best_state = float("inf"), None
    history: list[dict[str, float]] = []
    for epoch in range(1, epochs + 1):
        model.train()
        order = rng.permutation(len(xt))
        for lo in range(0, len(order), 256):
            idx = order[lo : lo + 256]
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        model.eval()
        with torch.inference_mode():
            val_loss = float(loss_fn(model(xv), yv))
        history.append({"epoch": epoch, "val_loss": val_loss})
        if val_loss < best:
            best, best_state = val_loss, {k: v.clone() for k, v in model.state_dict().items()}
    assert best_state is not None
    model.load_state_dict(best_state)
    with torch.inference_mode():
        probs = torch.sigmoid(model(torch.from_numpy(xs[split == "test"]))).numpy()
        val_probs = torch.sigmoid(model(xv)).numpy()
    # the class weights make raw sigmoids over-eager: one threshold per failure type, the best F2
    # on the validation split (never the test split), recorded with the model and used to score
    thresholds = np.array([_best_threshold(y[split == "val"][:, i], val_probs[:, i]) for i in range(len(targets))])
    ytest = y[split == "test"]
    metrics: dict[str, float] = {}
    p, r, f, _ = precision_recall_fscore_support(ytest, probs >= thresholds, zero_division=0)
    for i, t in enumerate(targets):
        metrics[f"{t}_precision"], metrics[f"{t}_recall"], metrics[f"{t}_f1"] = float(p[i]), float(r[i]), float(f[i])
        if 0 < ytest[:, i].sum() < len(ytest):
            metrics[f"{t}_roc_auc"] = float(roc_auc_score(ytest[:, i], probs[:, i]))
    any_true, any_pred = ytest.max(1) > 0, (probs >= thresholds).max(1)
    pa, ra, fa, _ = precision_recall_fscore_support(any_true, any_pred, average="binary", zero_division=0)
    metrics.update(
        failure_precision=float(pa),
        failure_recall=float(ra),
        failure_f1=float(fa),
        accuracy=float((any_true == any_pred).mean()),
        n=float(len(ytest)),
    )

    name = model_name(cfg.id, TASK)
    commit, dirty = code_state()
    tags = {
        "data.manifest_sha256": manifest.id,
        "code.commit": commit,
        "code.dirty": str(dirty).lower(),
        "config.sha256": cfg.sha256(),
        "recipe": f"sensor-mlp-{spec_name}",
        "plant": cfg.id,
        "parent_version": "",
        "targets": ",".join(targets),
        "held_out": ",".join(hold_out),
    }
    mlflow.set_experiment(experiment_id=ensure_experiment(name))
    with mlflow.start_run(run_name=f"{cfg.id}-sensor-mlp") as run, tempfile.TemporaryDirectory() as tmp_dir:
        mlflow.set_tags(tags)
        mlflow.log_params(
            {
                "model": "sensor_mlp",
                "epochs": epochs,
                "seed": seed,
                "targets": ",".join(targets),
                "features": json.dumps([*AI4I_FEATURES, "Type=L", "Type=M", "Type=H"]),
            }
        )
        for h in history:
            mlflow.log_metric("val_loss", h["val_loss"], step=int(h["epoch"]))
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})
        d = Path(tmp_dir) / "andon"
        d.mkdir()
        torch.save(model.state_dict(), d / "state_dict.pt")
        (d / "architecture.json").write_text(
            json.dumps(
                {
                    "name": "sensor_mlp",
                    "width": 16,
                    "in_channels": int(xs.shape[1]),
                    "num_classes": len(targets),
                    "classes": list(targets),
                },
                indent=1,
            )
        )
        (d / "preprocessing.json").write_text(
            json.dumps(
                {
                    "features": list(AI4I_FEATURES),
                    "one_hot": {"Type": list("LMH")},
                    "mean": mean.tolist(),
                    "std": std.tolist(),
                    "thresholds": [round(float(t), 4) for t in thresholds],
                },
                indent=1,
            )
        )
        (d / "environment.json").write_text(json.dumps(environment(), indent=1))
        # the monitoring reference: the validation split's raw readings and predictions
        n_raw = len(AI4I_FEATURES)
        ref, ref_table = sensor_reference(
            list(AI4I_FEATURES), x[split == "val"][:, :n_raw], val_probs >= thresholds, y[split == "val"], list(targets)
        )
        (d / "reference.json").write_text(ref.to_json())
        ref_table.to_parquet(d / "reference.parquet")
        _, version = log_version(name, model, d, tags, xs[:2].astype("float32"), run.info.run_id, register)
    return TrainOutcome(
        name,
        version,
        run.info.run_id,
        manifest.id,
        metrics,
        int(np.argmin([h["val_loss"] for h in history])) + 1,
        epochs,
        time.perf_counter() - t0,
        0.0,
        history,
    )
