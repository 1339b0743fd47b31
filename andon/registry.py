"""MLflow conventions: one registered model per plant and task (``<plant>.<task>``), versions
carrying their lineage as tags, aliases ``champion`` / ``challenger`` / ``previous-champion``.

Registration refuses a version without its lineage (data checksum, code commit, config
checksum, recipe, plant), so every version can be explained and reproduced. Moving an alias is
one registry call; the reasons, the user and the time of every move are kept as version tags.
"""

from __future__ import annotations

import getpass
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from andon.errors import AndonError, ServiceError

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"
SENSOR_TASK = "machine-failure"  # the AI4I-style sensor model of a plant: <plant>.machine-failure
LINEAGE_TAGS = ("data.manifest_sha256", "code.commit", "code.dirty", "config.sha256", "recipe", "plant")
REPO_ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


class RegistryError(AndonError, LookupError):
    """A model, version or alias that does not exist, or a version that lacks its lineage."""


def model_name(plant: str, task: str) -> str:
    return f"{plant}.{task}"


def plant_of(name: str) -> str:
    """``plant-a.surface-defects`` -> ``plant-a``."""
    plant, _, task = name.partition(".")
    if not task:
        raise RegistryError(f"model names look like <plant>.<task> (e.g. plant-a.surface-defects), got {name!r}")
    return plant


def code_state(repo: Path = REPO_ROOT) -> tuple[str, bool]:
    """(commit, dirty) of the code that trains; ``("unknown", True)`` outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "andon", "tasks", "flows", "configs", "pyproject.toml"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown", True
    return commit, bool(status)


def with_retries(fn: Callable[[], T], what: str, attempts: int = 3, delay_s: float = 1.0) -> T:
    """Retry an MLflow call on connection problems, then fail with a clear message."""
    from mlflow.exceptions import MlflowException

    last: Exception | None = None
    for i in range(attempts):
        try:
            return fn()
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "INVALID_PARAMETER" in str(exc.error_code):
                raise RegistryError(f"{what}: {exc.message}") from None
            last = exc
        except (ConnectionError, OSError) as exc:
            last = exc
        time.sleep(delay_s * 2**i)
    import mlflow

    raise ServiceError(
        f"{what}: MLflow at {mlflow.get_tracking_uri()} did not answer after {attempts} attempts ({last}); "
        "is the tracking server up (`andon up`)?"
    )


def use_tracking_server() -> str:
    """Point MLflow at the configured tracking URI (``ANDON_MLFLOW_TRACKING_URI``)."""
    import mlflow

    from andon.settings import get_settings

    uri = get_settings().mlflow_tracking_uri
    mlflow.set_tracking_uri(uri)
    return uri


def ensure_experiment(name: str) -> str:
    """The experiment ``name``; with a local (SQLite) store its artifacts go under ``ANDON_HOME``,
    never into the current folder (a tracking server decides for itself)."""
    import mlflow

    from andon.settings import get_settings

    uri = use_tracking_server()
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    location = None
    if not uri.startswith(("http://", "https://")):
        location = (get_settings().home / "mlflow" / "artifacts" / name).as_uri()
    return str(mlflow.create_experiment(name, artifact_location=location))


def client() -> Any:
    from mlflow import MlflowClient

    use_tracking_server()
    return MlflowClient()


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: int
    run_id: str
    aliases: list[str]
    tags: dict[str, str]
    metrics: dict[str, float]
    params: dict[str, str]
    created: str


def register_version(name: str, model_uri: str, run_id: str, tags: dict[str, str], model_id: str | None = None) -> int:
    """Register ``model_uri`` as a new version of ``name``; refuses a version without lineage.
    ``model_id``: the logged model's id; a tracking *server* refuses a ``models:/`` source without it."""
    missing = [t for t in LINEAGE_TAGS if not tags.get(t)]
    if missing:
        raise RegistryError(f"refusing to register {name}: lineage tags missing: {', '.join(missing)}")
    c = client()

    def create() -> int:
        from mlflow.exceptions import MlflowException

        try:
            c.get_registered_model(name)
        except MlflowException:
            c.create_registered_model(name, description=f"Andon model {name}")
        mv = c.create_model_version(name, model_uri, run_id=run_id, tags=tags, model_id=model_id)
        return int(mv.version)

    return with_retries(create, f"register {name}")


def set_alias(name: str, alias: str, version: int) -> None:
    with_retries(lambda: client().set_registered_model_alias(name, alias, str(version)), f"set {name}@{alias}")


def alias_version(name: str, alias: str) -> int | None:
    """The version behind ``name@alias``, or None when the alias is not set."""
    from mlflow.exceptions import MlflowException

    c = client()

    def get() -> int | None:
        try:
            return int(c.get_model_version_by_alias(name, alias).version)
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "INVALID_PARAMETER" in str(exc.error_code):
                return None
            raise

    return with_retries(get, f"resolve {name}@{alias}")


def version_info(name: str, version: int) -> VersionInfo:
    c = client()

    def get() -> VersionInfo:
        mv = c.get_model_version(name, str(version))
        run = c.get_run(mv.run_id)
        return VersionInfo(
            name=name,
            version=int(mv.version),
            run_id=mv.run_id,
            aliases=list(mv.aliases or []),
            tags=dict(mv.tags or {}),
            metrics=dict(run.data.metrics),
            params=dict(run.data.params),
            created=datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(timespec="seconds"),
        )

    return with_retries(get, f"read {name} version {version}")


def list_versions(name: str) -> list[VersionInfo]:
    c = client()
    found = with_retries(lambda: c.search_model_versions(f"name='{name}'"), f"list {name}")
    if not found:
        raise RegistryError(f"no registered model {name!r} (train one with `andon train`)")
    return sorted((version_info(name, int(v.version)) for v in found), key=lambda v: v.version)


def tag_version(name: str, version: int, tags: dict[str, str]) -> None:
    c = client()

    def tag_all() -> None:
        for k, v in tags.items():
            c.set_model_version_tag(name, str(version), k, v)

    with_retries(tag_all, f"tag {name} v{version}")


def record_move(name: str, version: int, kind: str, reason: str, forced: bool = False) -> dict[str, str]:
    """Tags that say who moved an alias to this version, when and why."""
    tags = {
        f"{kind}.at": datetime.now(UTC).isoformat(timespec="seconds"),
        f"{kind}.by": getpass.getuser(),
        f"{kind}.reason": reason[:4000],
    }
    if forced:
        tags[f"{kind}.forced"] = "true"
    tag_version(name, version, tags)
    return tags
