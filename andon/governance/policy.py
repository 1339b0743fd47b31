"""Policy checks across plants (``andon governance check``; the challenger's part also runs before
every promotion). Each finding has a plant, a rule, a message and a severity: a ``violation``
fails the check (exit 1), a ``notice`` is reported (a champion due for a new version because the
code that trains or preprocesses changed since its commit; a dataset never seen by the gate).

Rules (configs/governance.yaml sets the ranges and the monitoring age):

- lineage: the champion carries ``data.manifest_sha256``, ``code.commit``, ``config.sha256``,
  ``recipe`` and ``plant`` tags, and its version is >= 1;
- checksum: its dataset manifest exists and its id is the sha256 of its content;
- metrics: held-out (``test_*``) metrics were logged with it;
- validation: no source batch of its dataset has a failing verdict of the gate (never validated:
  notice);
- monitoring: the plant's monitoring ran within ``monitoring_max_age_hours``;
- recipe: every merged recipe value is inside the center's ``recipe_ranges``;
- code: files under ``model_code`` changed since the champion's commit (notice: retrain).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from andon.config import PlantConfig
from andon.errors import ConfigError, ObjectNotFoundError
from andon.storage import ObjectStore, join_key

VIOLATION, NOTICE = "violation", "notice"
LINEAGE_TAGS = ("data.manifest_sha256", "code.commit", "config.sha256", "recipe", "plant")


@dataclass(frozen=True)
class Finding:
    plant: str
    rule: str
    severity: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Policy:
    recipe_ranges: dict[str, Any]
    monitoring_max_age_hours: float
    model_code: tuple[str, ...]


def load_policy(configs_dir: Path | None = None) -> Policy:
    import yaml

    from andon.settings import get_settings

    path = (configs_dir or get_settings().configs_dir) / "governance.yaml"
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: the center's policy file is missing") from None
    return Policy(
        dict(raw.get("recipe_ranges", {})),
        float(raw.get("monitoring_max_age_hours", 24)),
        tuple(raw.get("model_code", ())),
    )


def _get(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def check_recipe(cfg: PlantConfig, policy: Policy) -> list[Finding]:
    """Every range of the policy on the merged recipe (``quality.*`` paths: the plant's quality targets)."""
    recipe = cfg.recipe.model_dump(mode="json")
    quality = cfg.quality.model_dump(mode="json")
    out = []
    for path, allowed in policy.recipe_ranges.items():
        where = "quality" if path.startswith("quality.") else "recipe"
        value = _get(quality, path.removeprefix("quality.")) if where == "quality" else _get(recipe, path)
        shown = path if where == "quality" else f"recipe.{path}"
        if value is None:
            continue
        if all(isinstance(a, str) for a in allowed):
            if value not in allowed:
                out.append(Finding(cfg.id, "recipe", VIOLATION, f"{shown} = {value!r}: the center allows {allowed}"))
        elif not (float(allowed[0]) <= float(value) <= float(allowed[1])):
            out.append(Finding(cfg.id, "recipe", VIOLATION, f"{shown} = {value}: outside the center's range {allowed}"))
    return out


def check_version(store: ObjectStore, cfg: PlantConfig, name: str, version: int, what: str) -> list[Finding]:
    """Lineage, checksum, held-out metrics and validation of one registered version."""
    from andon.data.datasets import build_manifest, load_manifest, revoked_sources, status_key
    from andon.lifecycle.registry import version_info

    out: list[Finding] = []

    def add(rule: str, message: str, severity: str = VIOLATION) -> None:
        out.append(Finding(cfg.id, rule, severity, f"{what} {name} v{version}: {message}"))

    if version < 1:
        add("lineage", "version numbers start at 1")
    info = version_info(name, version)
    missing = [t for t in LINEAGE_TAGS if not info.tags.get(t)]
    if missing:
        add("lineage", f"lineage tags missing: {', '.join(missing)}")
    if not any(k.startswith("test_") for k in info.metrics):
        add("metrics", "no held-out (test_*) metrics logged")
    elif "test_escape_rate" not in info.metrics or "operating_point.threshold" not in info.tags:
        add("metrics", "no escape / overkill rates at an operating point (trained before Andon chose one?): retrain")
    manifest_id = info.tags.get("data.manifest_sha256")
    if manifest_id:
        try:
            manifest = load_manifest(store, cfg.id, manifest_id)
        except ObjectNotFoundError:
            add("checksum", f"its dataset {manifest_id[:12]} is not in the store")
        else:
            if build_manifest(cfg.id, manifest.objects, manifest.sources).id != manifest_id:
                add("checksum", f"dataset {manifest_id[:12]} does not hash to its id (edited after training?)")
            failed = revoked_sources(store, manifest)
            if failed:
                add("validation", f"{len(failed)} source batch(es) failed the gate since: {', '.join(failed[:3])}")
            unchecked = [s for s in manifest.sources if (k := status_key(s)) and not store.exists(k)]
            if unchecked:
                add("validation", f"{len(unchecked)} source batch(es) never went through the gate", NOTICE)
    return out


def _changed_since(commit: str, paths: tuple[str, ...]) -> list[str] | None:
    from andon.settings import REPO_ROOT

    if not commit or commit == "unknown":
        return None
    try:
        done = subprocess.run(
            ["git", "diff", "--name-only", commit, "--", *paths],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return [line for line in done.stdout.splitlines() if line] if done.returncode == 0 else None


def check_plant(store: ObjectStore, cfg: PlantConfig, policy: Policy, now: datetime | None = None) -> list[Finding]:
    from andon.lifecycle.registry import CHAMPION, alias_version, model_name, version_info

    now = now or datetime.now(UTC)
    out = check_recipe(cfg, policy)
    name = model_name(cfg.id, cfg.recipe.task)
    champion = alias_version(name, CHAMPION)
    if champion is None:
        return [*out, Finding(cfg.id, "champion", NOTICE, f"{name} has no champion yet")]
    out += check_version(store, cfg, name, champion, "champion")
    try:
        state = json.loads(store.get(join_key("monitoring", cfg.id, "state.json")))
        last = datetime.fromisoformat(state["last_end"]) if state.get("last_end") else None
    except ObjectNotFoundError:
        last = None
    if last is None or now - last > timedelta(hours=policy.monitoring_max_age_hours):
        when = "never" if last is None else f"last at {last:%Y-%m-%d %H:%M} UTC"
        out.append(Finding(cfg.id, "monitoring", VIOLATION,
                           f"monitoring has not run in {policy.monitoring_max_age_hours:g} h ({when})"))  # fmt: skip
    commit = version_info(name, champion).tags.get("code.commit", "")
    changed = _changed_since(commit, policy.model_code)
    if changed:
        shown = ", ".join(changed[:4]) + (" ..." if len(changed) > 4 else "")
        msg = f"champion v{champion} is due for a new version: {shown} changed since {commit[:10]}"
        out.append(Finding(cfg.id, "code", NOTICE, msg))
    return out


def check_all(store: ObjectStore, plants: list[PlantConfig], policy: Policy | None = None) -> list[Finding]:
    policy = policy or load_policy()
    return [f for cfg in plants for f in check_plant(store, cfg, policy)]
