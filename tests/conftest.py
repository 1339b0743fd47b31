"""The test base: isolated ANDON_HOME, ONE session-scoped Prefect harness, a moto S3 server over
real HTTP, a temp MLflow SQLite store, synthetic data generated once, and a PostgreSQL database
per test module for the production configuration.

Tests under ``tests/unit`` (and the doctests of ``andon/``) are marked ``unit``, under
``tests/integration`` ``integration`` (automatically, by folder).
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
    # before Prefect or MLflow are imported anywhere: keep them off the user's home and offline
    scratch = Path(tempfile.mkdtemp(prefix="andon-tests-"))
    os.environ["PREFECT_HOME"] = str(scratch / "prefect-home")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    os.environ["PREFECT_SERVER_LOGGING_LEVEL"] = "WARNING"
    os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"] = "andon"  # as Andon's workers and CLI run flows
    os.environ["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"] = "ignore"
    os.environ["ANDON_HOME"] = str(scratch / "andon-home")
    os.environ["MPLBACKEND"] = "Agg"
    # pytest-xdist workers share the cores: each worker's torch (and the servers, workers and demo it
    # starts) gets its share of threads (at least one), not all of them. Two workers on 2 cores with
    # two threads each spin against each other: 3:05 vs 2:10 for two training-heavy modules (measured)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    for var in (
        "ANDON_OBJECT_STORE_URL",
        "ANDON_S3_ENDPOINT_URL",
        "ANDON_PREFECT_API_URL",
        "PREFECT_API_URL",
    ):
        os.environ.pop(var, None)


# `make test` runs the suite on three pytest-xdist workers, a test module a unit of work (its
# module-scoped fixtures are set up once), the longest first so the workers finish together.
# Modules that share something outside their own temp dirs and ports run on one worker: both MQTT
# tests subscribe to plant-b's topics on the one local broker.
SAME_WORKER = {"test_gateway.py": "mqtt", "test_gateway_door.py": "mqtt"}
LONGEST_FIRST = ("test_demo.py",)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, absent without it
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return SAME_WORKER.get(Path(path).name, path)

    config.option.loadscopereorder = False  # keep the order below, not "most tests first"
    return ModuleScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank: dict[str, int] = {}  # per module, so a module's tests stay together and in their order
    for item in items:
        path = Path(str(item.fspath))
        if "unit" in path.parts or path.is_relative_to(REPO / "andon"):  # doctests are unit tests
            item.add_marker(pytest.mark.unit)
        elif "integration" in path.parts:
            item.add_marker(pytest.mark.integration)
        first = 0 if path.name in LONGEST_FIRST else 1 if item.get_closest_marker("slow") else 2
        rank[str(path)] = min(rank.get(str(path), first), first)
    items.sort(key=lambda item: rank[str(item.fspath)])


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    """Settings are cached per process; tests that change ANDON_* env get a fresh read."""
    from andon.settings import reset_settings

    reset_settings()
    yield
    reset_settings()


@pytest.fixture
def andon_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private ANDON_HOME with a file:// object store inside it."""
    home = tmp_path / "andon-home"
    monkeypatch.setenv("ANDON_HOME", str(home))
    monkeypatch.delenv("ANDON_OBJECT_STORE_URL", raising=False)
    return home


@pytest.fixture
def local_store(tmp_path: Path):  # type: ignore[no-untyped-def]
    from andon.storage import LocalObjectStore

    return LocalObjectStore(tmp_path / "objects")


# ------------------------------------------------------------------ Prefect


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """ONE temporary Prefect server (SQLite) for the whole session; never nest another."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


# ------------------------------------------------------------------ MLflow


@pytest.fixture
def mlflow_tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A temp SQLite tracking store per test (the file store is refused by MLflow 3)."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("ANDON_MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)


# ------------------------------------------------------------------ S3 over real HTTP


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's ThreadedMotoServer on 127.0.0.1 (a real HTTP S3 endpoint, in memory)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_store(s3_endpoint: str):  # type: ignore[no-untyped-def]
    """A fresh bucket per test."""
    from andon.storage import S3ObjectStore

    store = S3ObjectStore(f"andon-{uuid.uuid4().hex[:12]}", endpoint_url=s3_endpoint, max_attempts=3)
    store.ensure_bucket()
    return store


# ------------------------------------------------------------------ data


@pytest.fixture(scope="session")
def synthetic_plant(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """plant-b's production, small and generated once per session: (store, batches)."""
    from andon.config import load_plant
    from andon.storage import LocalObjectStore
    from andon.synth.plant import synthesize_plant

    store = LocalObjectStore(tmp_path_factory.mktemp("synthetic-plant") / "objects")
    batches = synthesize_plant(
        load_plant("plant-b"),
        store,
        240,
        seed=11,
        start=datetime(2026, 11, 2, 6, 0, tzinfo=UTC),
        batch_size=60,
        workers=1,
    )
    return store, batches


@pytest.fixture(scope="session")
def casting_dir() -> Path:
    path = SHARED_DATA / "casting"
    if not (path / "train").is_dir():
        pytest.skip(f"the casting image set is not at {path} (see ../shared/data/README.md)")
    return path


@pytest.fixture
def sensor_champion(andon_home: Path, mlflow_tracking_uri: str):  # type: ignore[no-untyped-def]
    """plant-a's sensor model trained briefly on AI4I 2020 and made champion: (csv path, outcome)."""
    from andon.config import load_plant
    from andon.lifecycle.registry import CHAMPION, set_alias
    from andon.storage import open_store
    from andon.training.sensor import store_table, train_sensor

    path = SHARED_DATA / "ai4i2020" / "ai4i2020.csv"
    if not path.exists():
        pytest.skip(f"{path} is not here (see ../shared/data/README.md)")
    store = open_store()
    manifest_id, _ = store_table(store, load_plant("plant-a"), path)
    out = train_sensor(store, load_plant("plant-a"), manifest_id, epochs=10)
    set_alias(out.model_name, CHAMPION, out.version)
    return path, out


# ------------------------------------------------------------------ PostgreSQL (production configuration)


def _postgres_base_url() -> str:
    return os.environ.get("ANDON_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _reachable(url: str) -> str | None:
    """None when the server answers, else the reason."""
    from urllib.parse import urlparse

    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 5432), timeout=2):
            pass
    except OSError as exc:
        return f"PostgreSQL at {parsed.hostname}:{parsed.port or 5432} is not reachable ({exc})"
    return None


@pytest.fixture(scope="module")
def postgres_database(request: pytest.FixtureRequest) -> Iterator[Callable[[str], str]]:
    """A factory of fresh databases for this test module on the local PostgreSQL; all dropped
    afterwards. ``make("mlflow")`` returns ``postgresql://.../andon_<module>_mlflow_<random>``.

    Skips with the reason where no server answers (a laptop); fails when CI=true.
    """
    import psycopg2

    base = _postgres_base_url()
    reason = _reachable(base)
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI must test the production configuration (set ANDON_TEST_POSTGRES_URL)")
        pytest.skip(reason)
    module = re.sub(r"[^a-z0-9]+", "_", request.module.__name__.rsplit(".", 1)[-1].lower())
    conn = psycopg2.connect(base)
    conn.autocommit = True
    created: list[str] = []

    def make(purpose: str) -> str:
        name = f"andon_{module}_{purpose}_{uuid.uuid4().hex[:8]}"[:63]
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return base.rsplit("/", 1)[0] + f"/{name}"

    try:
        yield make
    finally:
        with conn.cursor() as cur:
            for name in created:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@pytest.fixture(scope="module")
def postgres_url(postgres_database: Callable[[str], str]) -> str:
    """One fresh database for this test module."""
    return postgres_database("main")


def wait_until(cond: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> None:
    """Poll ``cond`` until it holds; fail with ``what`` after ``timeout`` seconds (a bound for a
    hung test, never a speed assertion)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def stack_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """ANDON_HOME and free ports for `andon up`; whatever it started is stopped afterwards."""
    from andon import stack
    from andon.settings import get_settings, reset_settings

    home = tmp_path / "home"
    monkeypatch.setenv("ANDON_HOME", str(home))
    monkeypatch.setenv("ANDON_PREFECT_PORT", str(free_port()))
    monkeypatch.setenv("ANDON_MLFLOW_PORT", str(free_port()))
    monkeypatch.setenv("ANDON_UI_PORT", str(free_port()))
    reset_settings()
    yield home
    reset_settings()
    stack.down(get_settings())


def mes_message(i: int | str = 1, plant: Any = "plant-a", **extra: Any) -> dict[str, Any]:
    """A valid MES ``sku.introduced`` message (fresh id each call); ``extra`` overrides fields."""
    return {
        "type": "sku.introduced",
        "message_id": f"MES-{uuid.uuid4().hex[:8]}-{i}",
        "plant": plant,
        "line": "line-1",
        "occurred_at": "2026-11-26T08:00:00Z",
        "sku": f"SKU-{i}",
    } | extra
