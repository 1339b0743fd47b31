"""MLflow conventions: one registered model per plant and task (``<plant>.<task>``), versions
carrying their lineage as tags, aliases ``champion`` / ``challenger`` / ``previous-champion``.

Registration refuses a version without its lineage (data checksum, code commit, config
checksum, recipe, plant), so every version can be explained and reproduced. The reasons, the user
and the time of every move are kept as version tags.

``champion`` and ``previous-champion`` move together (:func:`move_champion`): serialized per model
by a lock in the database the registry already has, and committed by one atomic write of a model
tag (``andon.aliases``) that readers trust; the two MLflow aliases follow it. See
:func:`move_champion` for why, and ``docs/registry.md``.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from andon.errors import AndonError, DataError, ServiceError

if TYPE_CHECKING:
    from andon.config import Recipe

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"
PAIR_TAG = "andon.aliases"  # the committed (champion, previous-champion) of a model, one JSON value
CENTRAL = "central"  # the fleet's baseline: central.<task>
SENSOR_TASK = "machine-failure"  # the AI4I-style sensor model of a plant: <plant>.machine-failure
LINEAGE_TAGS = ("data.manifest_sha256", "code.commit", "code.dirty", "config.sha256", "recipe", "plant")
REPO_ROOT = Path(__file__).resolve().parents[2]
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


# ONE retry policy for every MLflow call: MLflow's own (urllib3 retries with backoff), bounded so
# that "MLflow is down" is said within about 30 s (MLflow's defaults retry for minutes); a user's
# own MLFLOW_HTTP_REQUEST_* settings win. Read by MLflow at each request.
MLFLOW_RETRY_POLICY = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",  # sleeps of about 1, 2, 4 s between attempts
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",  # per request: a large artifact upload still fits on a LAN
}


def with_retries(fn: Callable[[], T], what: str) -> T:
    """An MLflow call under MLflow's bounded retry policy (``MLFLOW_RETRY_POLICY``; no second
    round on top of it), its failure said clearly: an unknown model or version is a
    ``RegistryError``, a tracking server that did not answer a ``ServiceError``."""
    from mlflow.exceptions import MlflowException

    try:
        return fn()
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "INVALID_PARAMETER" in str(exc.error_code):
            raise RegistryError(f"{what}: {exc.message}") from None
        last: Exception = exc
    except (ConnectionError, OSError) as exc:
        last = exc
    import mlflow

    retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", MLFLOW_RETRY_POLICY["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
    raise ServiceError(
        f"{what}: MLflow at {mlflow.get_tracking_uri()} did not answer ({retries} retries; {str(last)[:300]}); "
        "is the tracking server up (`andon up`)?"
    )


def use_tracking_server() -> str:
    """Point MLflow at the configured tracking URI (``ANDON_MLFLOW_TRACKING_URI``)."""
    import mlflow

    from andon.settings import get_settings

    for var, value in MLFLOW_RETRY_POLICY.items():
        os.environ.setdefault(var, value)
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
    """Point ``name@alias`` at ``version``. ``champion`` and ``previous-champion`` go through
    :func:`move_champion` (locked, committed together), never as a lone alias write."""
    if alias == CHAMPION:
        move_champion(name, version)
        return
    if alias == PREVIOUS:
        with alias_lock(name):
            champion, _ = champion_pair(name)
            if champion == version:
                raise RegistryError(f"{name} v{version} is the champion; it cannot also be its previous champion")
            _commit_pair(name, champion, version)
        return
    with_retries(lambda: client().set_registered_model_alias(name, alias, str(version)), f"set {name}@{alias}")


# ---------------------------------------------------------------- champion / previous-champion moves


def _lock_backend() -> str:
    """The database whose lock serializes alias moves: the tracking store itself when MLflow is
    used without a server (``sqlite:///`` or ``postgresql://``), else the server's backend store
    (``ANDON_MLFLOW_BACKEND_STORE_URI``: the SQLite file of the embedded server, or production's
    PostgreSQL)."""
    from andon.settings import get_settings

    uri = use_tracking_server()
    if uri.startswith(("sqlite:", "postgresql", "postgres:")):
        return uri
    return get_settings().mlflow_backend_store_uri


def _lock_id(name: str) -> int:
    """A signed 64-bit key per model (PostgreSQL advisory locks take a bigint)."""
    return int.from_bytes(hashlib.sha256(f"andon.aliases:{name}".encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def alias_lock(name: str, timeout_s: float = 120.0) -> Iterator[None]:
    """Hold the per-model alias lock: a PostgreSQL advisory lock when the registry lives in
    PostgreSQL (every worker of every machine shares it), else an ``flock`` on a file beside the
    SQLite database (every process and thread on this machine that uses that database). Waits
    up to ``timeout_s``, then fails with a clear error rather than moving unguarded."""
    backend = _lock_backend()
    if backend.startswith(("postgresql", "postgres:")):
        with _pg_lock(backend, _lock_id(name), timeout_s):
            yield
        return
    with _file_lock(_lock_path(backend, name), timeout_s):
        yield


def _lock_path(backend: str, name: str) -> Path:
    from andon.settings import get_settings

    folder = get_settings().home / "locks"
    if backend.startswith("sqlite:///"):
        db = Path(backend.removeprefix("sqlite:///").split("?", 1)[0])
        folder = db.parent / f"{db.name}.locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"aliases-{hashlib.sha256(name.encode()).hexdigest()[:16]}.lock"


@contextlib.contextmanager
def _file_lock(path: Path, timeout_s: float) -> Iterator[None]:
    import fcntl

    # a fresh open file description per holder: flock excludes other threads of this process too
    with path.open("a+b") as f:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ServiceError(f"alias lock {path} held for over {timeout_s:.0f} s; is a move stuck?") from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _pg_lock(url: str, key: int, timeout_s: float) -> Iterator[None]:
    """A session-level advisory lock on its own connection (released when the move ends, or by
    PostgreSQL when the process dies: a crashed mover never holds the lock)."""
    import re

    import psycopg2

    dsn = re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)
    try:
        conn = psycopg2.connect(dsn, connect_timeout=30)
    except psycopg2.OperationalError as exc:
        raise ServiceError(f"alias lock: cannot reach the registry's PostgreSQL ({str(exc).strip()})") from None
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SET lock_timeout = %s", (f"{int(timeout_s * 1000)}ms",))
            try:
                cur.execute("SELECT pg_advisory_lock(%s)", (key,))
            except psycopg2.OperationalError as exc:
                raise ServiceError(f"alias lock (PostgreSQL advisory lock {key}) not granted: {exc}") from None
            try:
                yield
            finally:
                cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
    finally:
        conn.close()


def _read_model(name: str) -> Any:
    return with_retries(lambda: client().get_registered_model(name), f"read {name}")


def champion_pair(name: str) -> tuple[int | None, int | None]:
    """(champion, previous-champion) of ``name`` as last committed: one read of one tag, so never a
    mix of two moves. A model whose aliases predate the tag is read from its aliases."""
    from mlflow.exceptions import MlflowException

    try:
        model = client().get_registered_model(name)
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "INVALID_PARAMETER" in str(exc.error_code):
            return None, None
        model = _read_model(name)  # transient: retried, then a clear error
    raw = (model.tags or {}).get(PAIR_TAG)
    if raw:
        try:
            pair = json.loads(raw)
            return _opt_int(pair.get(CHAMPION)), _opt_int(pair.get(PREVIOUS))
        except (ValueError, TypeError, AttributeError):
            pass  # a hand-edited tag: fall back to the aliases below
    aliases = model.aliases or {}
    return _opt_int(aliases.get(CHAMPION)), _opt_int(aliases.get(PREVIOUS))


def _opt_int(value: Any) -> int | None:
    return None if value in (None, "") else int(value)


def _commit_pair(name: str, champion: int | None, previous: int | None) -> None:
    """Commit, then make the aliases follow. Call with :func:`alias_lock` held.

    The tag write is the commit point (one row, atomic in any database): a crash before it changed
    nothing, a crash after it leaves the aliases one or two writes behind a committed, consistent
    pair that readers already use and the next move repairs (:func:`_sync_aliases`)."""
    if champion is not None and champion == previous:
        raise RegistryError(f"{name}: v{champion} cannot be both champion and previous champion")
    c = client()
    for v in (champion, previous):
        if v is not None:
            _exists(c, name, v)  # or a clear error
    body = json.dumps({CHAMPION: champion, PREVIOUS: previous, "at": datetime.now(UTC).isoformat()})
    with_retries(lambda: c.set_registered_model_tag(name, PAIR_TAG, body), f"commit {name} aliases")
    _sync_aliases(name, champion, previous)


def _exists(c: Any, name: str, version: int) -> None:
    with_retries(lambda: c.get_model_version(name, str(version)), f"read {name} v{version}")


def _sync_aliases(name: str, champion: int | None, previous: int | None) -> None:
    """The MLflow aliases as the committed pair says (champion first: it is what serves)."""
    if champion is None and previous is None:
        return  # nothing committed (no model yet, or never a champion): nothing to follow
    c = client()
    current = dict(_read_model(name).aliases or {})
    for alias, version in ((CHAMPION, champion), (PREVIOUS, previous)):
        if _opt_int(current.get(alias)) != version:
            _put_alias(c, name, alias, version)


def _put_alias(c: Any, name: str, alias: str, version: int | None) -> None:
    if version is None:
        with_retries(lambda: c.delete_registered_model_alias(name, alias), f"unset {name}@{alias}")
    else:
        with_retries(lambda: c.set_registered_model_alias(name, alias, str(version)), f"set {name}@{alias}")


_ANY: Any = object()  # move_champion without a compare-and-set


def move_champion(name: str, version: int, *, expect: int | None = _ANY) -> int | None:
    """Make ``version`` the champion; the champion it replaces becomes ``previous-champion``.
    Returns the replaced champion (None for a first champion).

    ``expect``: the champion the caller decided against (the promotion gate compared the challenger
    with it). If another move happened since, the move is refused instead of committing a
    decision taken against a version that no longer serves; with the lock, a promotion racing a
    rollback either sees the rolled-back champion (and keeps it as the rollback target) or is
    refused, so the serving version never drops out of the rollback chain.

    Why a lock plus a committed tag, not alias writes alone: a rollback swaps two aliases, and
    no order of two separate alias writes keeps ``champion != previous-champion`` at every
    instant (either write alone leaves them equal). So moves are serialized per model by a lock in
    the database the registry already has (:func:`alias_lock`), and each move is committed by one
    atomic tag write that every Andon reader uses (:func:`champion_pair`); the aliases follow for
    MLflow's own clients (``models:/<name>@champion``) and are repaired by the next move after a
    crash. A compare-and-set on version tags was the alternative, but MLflow has no conditional
    write, so it would still need the lock.
    """
    with alias_lock(name):
        champion, previous = champion_pair(name)
        _sync_aliases(name, champion, previous)  # finish a move that crashed after its commit
        if expect is not _ANY and champion != expect:
            now = f"v{champion}" if champion is not None else "none"
            was = f"v{expect}" if expect is not None else "none"
            raise RegistryError(
                f"{name}: the champion changed from {was} to {now} while v{version} was being judged; "
                "nothing was moved: run the promotion again"
            )
        if champion == version:
            return champion
        keep = champion if champion is not None else (previous if previous != version else None)
        _commit_pair(name, version, keep)
        return champion


def rollback_champion(name: str, to: int | None = None) -> tuple[int, int]:
    """Champion back to ``previous-champion`` (or ``to``), the replaced champion becoming the
    previous one, read and moved under the lock; returns (from, to)."""
    with alias_lock(name):
        current, previous = champion_pair(name)
        _sync_aliases(name, current, previous)
        if current is None:
            raise RegistryError(f"{name} has no champion to roll back")
        target = to if to is not None else previous
        if target is None:
            raise RegistryError(f"{name} has no previous champion; give the version to go back to with --to")
        if target == current:
            raise RegistryError(f"{name} v{target} is already the champion")
        _commit_pair(name, target, current)
        return current, target


def alias_version(name: str, alias: str) -> int | None:
    """The version behind ``name@alias``, or None when the alias is not set. ``champion`` and
    ``previous-champion`` are read from the committed pair (:func:`champion_pair`)."""
    from mlflow.exceptions import MlflowException

    if alias == CHAMPION:
        return champion_pair(name)[0]
    if alias == PREVIOUS:
        return champion_pair(name)[1]
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


def central_champion(task: str) -> tuple[str, int]:
    name = model_name(CENTRAL, task)
    version = alias_version(name, CHAMPION)
    if version is None:
        raise RegistryError(f"{name} has no champion: train the central baseline first (`andon governance central`)")
    return name, version


def compatible_central(recipe: Recipe, who: str) -> tuple[str, int]:
    """The central champion, if its network is the one ``recipe`` builds (same name and width);
    else a clear error (its weights cannot start ``who``)."""
    parent = central_champion(recipe.task)
    params = version_info(*parent).params
    theirs = (params.get("model.name"), params.get("model.width"))
    if theirs != (recipe.model.name, str(recipe.model.width)):
        raise DataError(
            f"{who} uses {recipe.model.name} (width {recipe.model.width}); the central baseline "
            f"{parent[0]} v{parent[1]} is {theirs[0]} (width {theirs[1]}): it cannot start from it"
        )
    return parent
