"""Champion / challenger: the promotion gate, rollback and the version diff.

The gate evaluates both versions on the same data (the plant's golden set, else the
challenger's held-out split), each at its own operating point, collects every violation, then
decides once. Absolute rules hold for every champion, the first one included (the plant's
``quality`` section): enough defects evaluated to judge escapes, the escape rate and the overkill
rate within the plant's maxima; so a model that passes every part can never be champion, at any
defect rate. Relative rules compare with the champion (``recipe.promotion``): escape and overkill
may not rise by more than the allowances. Latency is the model's own cost (best of repeated
single-part runs on one thread), so the decision does not depend on how busy the machine is.
Every alias move is recorded on the version as tags (who, when, why, forced).
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from andon.config import PlantConfig
from andon.data.datasets import diff as dataset_diff
from andon.data.datasets import load_manifest
from andon.errors import DataError
from andon.lifecycle.registry import (
    CHALLENGER,
    CHAMPION,
    REPO_ROOT,
    RegistryError,
    alias_version,
    model_name,
    move_champion,
    record_move,
    rollback_champion,
    tag_version,
    version_info,
)
from andon.models.runtimes import CHECKED_TAG, VERIFIED_TAG
from andon.quality import fmt_rate
from andon.storage import ObjectStore, join_key

logger = logging.getLogger(__name__)  # a flow run's Logs tab shows it (PREFECT_LOGGING_EXTRA_LOGGERS=andon)


@dataclass
class GateDecision:
    passed: bool
    violations: list[str]
    challenger: int
    champion: int | None
    challenger_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    evaluated_on: str
    forced: bool = False
    notes: list[str] = field(default_factory=list)
    decided_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())  # one decision, one event

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def check_rules(challenger: dict[str, float], champion: dict[str, float] | None, cfg: PlantConfig) -> list[str]:
    """Every rule the challenger breaks (empty: it may be promoted). Metrics are each version's at
    its own operating point on the same evaluation data (``evaluate_model``)."""
    nan = float("nan")
    q, rules = cfg.quality, cfg.recipe.promotion
    out: list[str] = []
    defects, goods = int(challenger.get("defects", 0)), int(challenger.get("goods", 0))
    esc, esc_up = float(challenger.get("escape_rate", nan)), float(challenger.get("escape_rate_upper", 1.0))
    ovk, ovk_up = float(challenger.get("overkill_rate", nan)), float(challenger.get("overkill_rate_upper", 1.0))
    if defects < q.min_defects:
        out.append(
            f"only {defects} defects evaluated: escapes are judged on at least {q.min_defects} "
            "(add defects to the golden set, or curate a defect-enriched dataset)"
        )
    if math.isnan(esc) or esc > q.max_escape_rate:
        out.append(f"escape rate {fmt_rate(esc, esc_up)} over the plant's maximum {q.max_escape_rate:.1%}")
    elif q.require_proven and esc_up > q.max_escape_rate:
        out.append(
            f"escape rate {fmt_rate(esc, esc_up)} is not proven below {q.max_escape_rate:.1%} at "
            f"{q.confidence:.0%} confidence ({defects} defects evaluated)"
        )
    if goods == 0:
        out.append("no good parts evaluated: the overkill rate is unknown")
    elif math.isnan(ovk) or ovk > q.max_overkill_rate:
        out.append(f"overkill rate {fmt_rate(ovk, ovk_up)} over the plant's maximum {q.max_overkill_rate:.1%}")
    if challenger.get("accuracy", 0.0) < rules.min_accuracy:
        out.append(f"accuracy {challenger.get('accuracy', 0):.4f} below the floor {rules.min_accuracy:.4f}")
    lat = challenger.get("latency_ms", 0.0)
    if lat > rules.max_latency_ms:
        out.append(f"latency {lat:.1f} ms per part (best of repeated runs), budget {rules.max_latency_ms:.1f} ms")
    if champion is not None:
        c_esc, c_ovk = float(champion.get("escape_rate", nan)), float(champion.get("overkill_rate", nan))
        if esc - c_esc > rules.max_escape_increase:  # False when either is NaN
            out.append(
                f"escape rate rises {(esc - c_esc) * 100:.2f} points ({fmt_rate(c_esc)} -> {fmt_rate(esc)}); "
                f"allowed {rules.max_escape_increase * 100:.2f}"
            )
        if ovk - c_ovk > rules.max_overkill_increase:
            out.append(
                f"overkill rate rises {(ovk - c_ovk) * 100:.2f} points ({fmt_rate(c_ovk)} -> {fmt_rate(ovk)}); "
                f"allowed {rules.max_overkill_increase * 100:.2f}"
            )
    return out


def verdict_line(m: dict[str, float], cfg: PlantConfig) -> str:
    """``escape 1.2 % (<= 4.1 %), overkill 0.8 % (<= 2.0 %), 48 defects; accuracy 0.987`` plus
    whether the escape target is proven."""
    from andon.quality import Rates

    rates = Rates(int(m.get("escapes", 0)), int(m.get("defects", 0)), int(m.get("overkills", 0)),
                  int(m.get("goods", 0)), cfg.quality.confidence)  # fmt: skip
    return (
        f"escape {fmt_rate(m.get('escape_rate', float('nan')), m.get('escape_rate_upper'))}, "
        f"overkill {fmt_rate(m.get('overkill_rate', float('nan')), m.get('overkill_rate_upper'))} "
        f"on {rates.defects} defects / {rates.goods} good parts ({rates.escape_claim(cfg.quality.max_escape_rate)}); "
        f"accuracy {m.get('accuracy', float('nan')):.3f}"
    )


def golden_objects(store: ObjectStore, cfg: PlantConfig, challenger: int) -> tuple[str, list[dict[str, Any]]]:
    """The plant's golden set (``datasets/<plant>/golden.json`` names a dataset), else the
    challenger's own held-out split."""
    import mlflow

    key = join_key("datasets", cfg.id, "golden.json")
    if store.exists(key):
        golden_id = json.loads(store.get(key))["id"]
        return f"golden set {golden_id[:12]}", load_manifest(store, cfg.id, golden_id).objects
    info = version_info(model_name(cfg.id, cfg.recipe.task), challenger)
    path = mlflow.artifacts.download_artifacts(run_id=info.run_id, artifact_path="andon/split.json")
    with open(path) as fh:
        split = json.load(fh)
    manifest = load_manifest(store, cfg.id, info.tags["data.manifest_sha256"])
    test = set(split["test"])
    return f"held-out split of v{challenger}", [o for o in manifest.objects if o["key"] in test]


def evaluate_version(
    store: ObjectStore, cfg: PlantConfig, version: int, objects: list[dict[str, Any]], *, runtimes: bool = False
) -> dict[str, float]:
    """:func:`evaluate_model` of a registered version; with ``runtimes``, the inference runtimes
    are checked against torch on the same images and the verdict recorded on the version
    (:func:`check_runtimes`)."""
    from andon.training.run import load_version

    loaded = load_version(model_name(cfg.id, cfg.recipe.task), version)
    metrics, data = evaluate_model(store, loaded, objects, cfg.quality.confidence, keep_data=True)
    if runtimes:
        verified, checked = check_runtimes(cfg, loaded, data, metrics)
        tag_version(model_name(cfg.id, cfg.recipe.task), version, {
            VERIFIED_TAG: ",".join(verified), CHECKED_TAG: json.dumps(checked)[:4000],
        })  # fmt: skip
        metrics["runtimes_verified"] = float(len(verified))
    return metrics


def evaluate_model(
    store: ObjectStore, loaded: Any, objects: list[dict[str, Any]], confidence: float = 0.95, *, keep_data: bool = False
) -> Any:
    """Escape / overkill at the version's own operating point, the other classification metrics of
    the same decisions, and the single-part latency of ``loaded`` (a ``LoadedVersion``) on
    ``objects`` (any plant's). ``keep_data``: (metrics, the decoded images and labels)."""
    from andon.settings import get_settings
    from andon.training.data import ImageCache, load_split
    from andon.training.evaluate import classification_metrics
    from andon.training.run import latency_ms

    cache = ImageCache(get_settings().home / "cache" / "images")
    data = load_split(store, objects, loaded.classes, loaded.size, cache, transform=loaded.transform)
    probs, _ = loaded.predict(data.images)
    metrics = classification_metrics(probs, data.labels, loaded.classes, loaded.operating_point.threshold, confidence)
    metrics["latency_ms"] = latency_ms(loaded.model, data.images)
    return (metrics, data) if keep_data else metrics


def check_runtimes(
    cfg: PlantConfig, loaded: Any, data: Any, reference: dict[str, float]
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Each runtime of ``inference.runtimes`` this machine has, run on the same golden images as
    torch (``reference``: torch's metrics) at the version's operating point: verified when neither
    the escape nor the overkill rate moves by more than ``inference.max_rate_change``. Returns
    (verified runtimes in preference order, torch last; what was measured per runtime)."""
    from andon.errors import IntegrityError
    from andon.models.runtimes import RuntimeUnavailable
    from andon.training.evaluate import classification_metrics

    spec = cfg.recipe.inference
    verified: list[str] = []
    checked: dict[str, dict[str, Any]] = {}
    for runtime in spec.runtimes:
        if runtime == "torch":
            continue
        try:
            runner = loaded.runner(runtime)
        except (RuntimeUnavailable, IntegrityError) as exc:
            checked[runtime] = {"verdict": "unavailable", "reason": str(exc)}
            continue
        try:
            probs, _ = loaded.predict(data.images, runner)
        except Exception as exc:  # a runtime that fails on the golden set never serves
            checked[runtime] = {"verdict": "refused", "reason": f"failed to run: {str(exc)[:300]}"}
            logger.warning("%s: runtime %s refused: it failed on the golden set (%s)", cfg.id, runtime, exc)
            continue
        m = classification_metrics(probs, data.labels, loaded.classes, loaded.operating_point.threshold)
        moved = {k: m[k] - reference[k] for k in ("escape_rate", "overkill_rate")}
        ok = all(abs(v) <= spec.max_rate_change for v in moved.values())
        checked[runtime] = {
            "verdict": "verified" if ok else "refused",
            "escape_rate": m["escape_rate"], "overkill_rate": m["overkill_rate"],
            "escape_moved": moved["escape_rate"], "overkill_moved": moved["overkill_rate"],
        }  # fmt: skip
        if ok:
            verified.append(runtime)
        else:
            logger.warning(
                "%s: runtime %s refused: escape %s -> %s, overkill %s -> %s (torch -> it; allowed %.2f points)",
                cfg.id, runtime, fmt_rate(reference["escape_rate"]), fmt_rate(m["escape_rate"]),
                fmt_rate(reference["overkill_rate"]), fmt_rate(m["overkill_rate"]), spec.max_rate_change * 100,
            )  # fmt: skip
    return [*verified, "torch"], checked


def policy_violations(store: ObjectStore, cfg: PlantConfig, challenger: int) -> list[str]:
    """The center's policy on the challenger before it can serve (andon/governance/policy.py):
    lineage, checksum, held-out metrics, validation, recipe ranges. Notices do not block."""
    from andon.governance.policy import VIOLATION, check_recipe, check_version, load_policy

    findings = check_version(store, cfg, model_name(cfg.id, cfg.recipe.task), challenger, "challenger")
    findings += check_recipe(cfg, load_policy())
    return [f"policy ({f.rule}): {f.message}" for f in findings if f.severity == VIOLATION]


def promote(store: ObjectStore, cfg: PlantConfig, force: bool = False, reason: str = "") -> GateDecision:
    """Challenger vs champion on the same data; pass moves the aliases, fail records why."""
    name = model_name(cfg.id, cfg.recipe.task)
    challenger = alias_version(name, CHALLENGER)
    if challenger is None:
        raise RegistryError(f"{name} has no challenger to promote (train one with `andon train`)")
    champion = alias_version(name, CHAMPION)
    if champion == challenger:
        raise RegistryError(f"{name} v{challenger} is already the champion")
    what, objects = golden_objects(store, cfg, challenger)
    if not objects:
        raise DataError(f"{what} is empty: nothing to compare the versions on")
    ch_metrics = evaluate_version(store, cfg, challenger, objects, runtimes=True)
    cp_metrics = evaluate_version(store, cfg, champion, objects) if champion is not None else None
    violations = check_rules(ch_metrics, cp_metrics, cfg) + policy_violations(store, cfg, challenger)
    decision = GateDecision(
        passed=not violations or force,
        violations=violations,
        challenger=challenger,
        champion=champion,
        challenger_metrics=ch_metrics,
        champion_metrics=cp_metrics,
        evaluated_on=what,
        forced=force and bool(violations),
    )
    summary = "; ".join(violations) if violations else "all promotion rules passed"
    if decision.passed:
        move_champion(name, challenger, expect=champion)  # refused if another move happened meanwhile
        why = (reason or summary) + (" [FORCED past: " + summary + "]" if decision.forced else "")
        record_move(name, challenger, "promotion", f"{why} (on {what})", forced=decision.forced)
    else:
        record_move(name, challenger, "promotion_refused", f"{summary} (on {what})")
    verdict = ("PROMOTED (forced)" if decision.forced else "PROMOTED") if decision.passed else "REFUSED"
    logger.info("%s v%d %s (champion was %s): %s", name, challenger, verdict, champion, summary)
    return decision


def rollback(cfg: PlantConfig, reason: str, to: int | None = None) -> tuple[int, int]:
    """Champion back to ``previous-champion`` (or ``to``); returns (from, to)."""
    if not reason.strip():
        raise RegistryError("a rollback needs a --reason (it is kept with the version for the audit trail)")
    name = model_name(cfg.id, cfg.recipe.task)
    current, target = rollback_champion(name, to)  # read and moved under the model's alias lock
    record_move(name, target, "rollback", f"from v{current}: {reason}")
    return current, target


def diff_versions(store: ObjectStore, cfg: PlantConfig, a: int, b: int) -> dict[str, Any]:
    """What differs between two versions: params, tags, metrics, data, code, environment."""
    import mlflow

    name = model_name(cfg.id, cfg.recipe.task)
    va, vb = version_info(name, a), version_info(name, b)
    params = {
        k: (va.params.get(k), vb.params.get(k))
        for k in sorted(set(va.params) | set(vb.params))
        if va.params.get(k) != vb.params.get(k)
    }
    lineage = ("data.manifest_sha256", "code.commit", "code.dirty", "config.sha256", "recipe", "parent_version")
    tags = {k: (va.tags.get(k), vb.tags.get(k)) for k in lineage if va.tags.get(k) != vb.tags.get(k)}
    metrics = {
        k: (va.metrics[k], vb.metrics[k], vb.metrics[k] - va.metrics[k])
        for k in sorted(set(va.metrics) & set(vb.metrics))
        if k.startswith("test_")
    }
    data: dict[str, Any] | None = None
    ma, mb = va.tags.get("data.manifest_sha256"), vb.tags.get("data.manifest_sha256")
    if ma and mb and ma != mb:
        try:
            data = dataset_diff(load_manifest(store, cfg.id, ma), load_manifest(store, cfg.id, mb)).as_dict()
            data = {
                **data,
                "added": data["added"][:20],
                "removed": data["removed"][:20],
                "added_n": len(data["added"]),
                "removed_n": len(data["removed"]),
            }
        except DataError as exc:
            data = {"error": str(exc)}
    code = _code_diff(va.tags.get("code.commit", ""), vb.tags.get("code.commit", ""))

    def env(info: Any) -> dict[str, str]:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=info.run_id, artifact_path="andon/environment.json")
            return dict(json.loads(open(path).read()))
        except Exception:  # an old version without the artifact: nothing to compare
            return {}

    ea, eb = env(va), env(vb)
    environment = {k: (ea.get(k), eb.get(k)) for k in sorted(set(ea) | set(eb)) if ea.get(k) != eb.get(k)}
    return {
        "model": name,
        "a": a,
        "b": b,
        "params": params,
        "tags": tags,
        "metrics": metrics,
        "data": data,
        "code": code,
        "environment": environment,
    }


def _code_diff(a: str, b: str) -> dict[str, str]:
    paths = ["andon/training", "andon/models", "andon/training/augment.py", "configs"]
    if not a or not b or "unknown" in (a, b):
        return {"note": "a commit is unknown: no code diff"}
    if a == b:
        return {"note": "same commit"}
    try:
        stat = subprocess.run(
            ["git", "diff", "--stat", a, b, "--", *paths],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        full = subprocess.run(
            ["git", "diff", a, b, "--", *paths], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return {"note": f"the repository does not have both commits ({exc})"}
    return {"stat": stat or "(training and preprocessing code unchanged)", "diff": full[:20000]}


@dataclass
class Reproduction:
    name: str
    version: int
    run_id: str
    rows: list[tuple[str, float, float, float, bool]]  # metric, registered, reproduced, delta, within tolerance

    @property
    def ok(self) -> bool:
        return all(r[4] for r in self.rows)


def reproduce(
    store: ObjectStore, cfg: PlantConfig, version: int, allow_dirty: bool = False, tolerance: float = 0.01
) -> Reproduction:
    """Re-run training of ``version`` from its recorded dataset, recipe and commit and compare the
    held-out metrics. The code must be at the recorded commit and clean (else ``allow_dirty``)."""
    import mlflow

    from andon.config import Recipe
    from andon.lifecycle.registry import code_state
    from andon.training.run import train_plant

    name = model_name(cfg.id, cfg.recipe.task)
    info = version_info(name, version)
    recorded, was_dirty = info.tags.get("code.commit", "unknown"), info.tags.get("code.dirty") == "true"
    now, dirty = code_state()
    problems = []
    if recorded == "unknown":
        problems.append("the version has no recorded commit")
    elif recorded != now:
        problems.append(
            f"the code is at {now[:10]}, the version was trained at {recorded[:10]} "
            f"(check it out, e.g. `git worktree add ../andon-{recorded[:8]} {recorded}`, and run there)"
        )
    if was_dirty:
        problems.append("the version was trained from uncommitted changes")
    if dirty:
        problems.append("the working tree has uncommitted changes to training code or configs")
    if problems and not allow_dirty:
        raise RegistryError(f"cannot reproduce {name} v{version}: " + "; ".join(problems) + " (or pass --allow-dirty)")
    path = mlflow.artifacts.download_artifacts(run_id=info.run_id, artifact_path="andon/recipe.json")
    with open(path) as fh:
        recipe = Recipe.model_validate_json(fh.read())
    out = train_plant(
        store,
        cfg,
        [info.tags["data.manifest_sha256"]],
        recipe=recipe,
        register=False,
        extra_tags={"reproduces": f"{name}/{version}"},
    )
    rows: list[tuple[str, float, float, float, bool]] = []
    for key in ("escape_rate", "overkill_rate", "threshold", "accuracy", "roc_auc", "ece"):
        if f"test_{key}" in info.metrics and key in out.metrics:
            a, b = info.metrics[f"test_{key}"], out.metrics[key]
            rows.append((key, a, b, b - a, abs(b - a) <= tolerance))
    return Reproduction(name, version, out.run_id, rows)
