"""The production topology on one machine: every process a multi-plant deployment runs, started
as it runs there (``infra/docker-compose.yml`` is the same shape in containers).

::

    MES ── gateway (outbox on PostgreSQL) ──> API server 1 ─┐   (it moves to the next when one is away)
                                          ──> API server 2 ─┤
    workers (one per plant pool) and their flow runs ──> load balancer ──> API server 1 or 2
    API servers (``prefect server start --no-services``) ── PostgreSQL + Redis (prefect-redis)
    background services (``prefect server services start``): event persister, triggers, scheduler...
    MLflow server (PostgreSQL, artifacts proxied to S3)

Redis carries Prefect's messaging (events from any API server reach the one services process),
its de-duplication cache (an event id seen twice is dropped), the triggers' causal ordering, the
concurrency leases (a retrain's slot survives the API server that granted it) and Docket's
background tasks. The database schema is migrated once, before the servers start, which then
skip migrations (two servers migrating one database at once race).

The load balancer stands in for NGINX or a Kubernetes Service: a TCP round robin that skips a
server refusing connections; Prefect's client retries a request whose connection dropped, and the
retry lands on a live server. Used by ``tests/integration/test_topology.py`` and
``benchmarks/topology.py``; nothing here imports Prefect.

Example (PostgreSQL databases, Redis, an S3 endpoint and the bucket must exist)::

    topo = Topology(settings, redis_url="redis://127.0.0.1:6379/3", plants=["plant-a", "plant-b"])
    with topo:                      # started and healthy; everything stopped on exit
        topo.kill("prefect-api-1")  # SIGKILL, as a crash would
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import urlparse

from andon.errors import ServiceError
from andon.settings import REPO_ROOT, AndonSettings
from andon.stack import is_healthy, prefect_db_url, services, stop_group


@dataclass
class Proc:
    name: str
    command: list[str]
    env: dict[str, str]  # may hold secrets: given to the process, never logged
    health_url: str | None = None  # None: alive is healthy
    role: str = "server"  # or "client": started once every server is healthy
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def redis_env(redis_url: str) -> dict[str, str]:
    """prefect-redis's variables for one Redis database (``redis://host:port/db``): messaging,
    its cache, the triggers' causal ordering, concurrency leases and Docket.

    >>> redis_env("redis://10.0.0.5:6380/3")["PREFECT_REDIS_MESSAGING_DB"]
    '3'
    """
    url = urlparse(redis_url)
    return {
        "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_REDIS_MESSAGING_HOST": url.hostname or "127.0.0.1",
        "PREFECT_REDIS_MESSAGING_PORT": str(url.port or 6379),
        "PREFECT_REDIS_MESSAGING_DB": url.path.strip("/") or "0",
        "PREFECT_SERVER_DOCKET_URL": redis_url,
    }


def _aws_env() -> dict[str, str]:
    """The S3 credentials of this process (boto3's variables), for the processes that use S3."""
    return {k: v for k, v in os.environ.items() if k.startswith("AWS_")}


class Topology:
    """Starts, watches and stops the topology's processes (each in its own process group).

    ``settings`` give the databases (``prefect_database_url``, ``mlflow_backend_store_uri``,
    ``gateway_outbox_url``), the object store, ``home`` (logs, Prefect homes), ``configs_dir``,
    the MES secret and the credentials (``PREFECT_API_AUTH_STRING``, MLflow's basic auth);
    ``env`` is added to every process (e.g. shorter worker polls for a test).
    """

    def __init__(
        self,
        settings: AndonSettings,
        redis_url: str,
        plants: Sequence[str],
        api_servers: int = 2,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if api_servers < 1:
            raise ValueError("api_servers: at least one")
        self.settings, self.redis_url, self.plants = settings, redis_url, list(plants)
        self.host = settings.host
        self.extra_env = dict(env or {})
        self.api_ports = [free_port(self.host) for _ in range(api_servers)]
        self.mlflow_port, self.gateway_port = free_port(self.host), free_port(self.host)
        self.balancer = Balancer([(self.host, p) for p in self.api_ports], host=self.host, port=free_port(self.host))
        self.procs: dict[str, Proc] = {}
        self.logs = settings.home / "logs"

    # ---------------------------------------------------------------- addresses
    @property
    def api_urls(self) -> list[str]:
        return [f"http://{self.host}:{p}/api" for p in self.api_ports]

    @property
    def prefect_api_url(self) -> str:
        """The load balancer's URL: what workers, flow runs and people use."""
        return f"{self.balancer.url}/api"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.host}:{self.gateway_port}"

    # ---------------------------------------------------------------- environments
    def _auth_env(self) -> dict[str, str]:
        s = self.settings
        env = {}
        if s.prefect_api_auth_string is not None:
            env["PREFECT_API_AUTH_STRING"] = s.prefect_api_auth_string.get_secret_value()
        if s.mlflow_password is not None:
            env |= {
                "MLFLOW_TRACKING_USERNAME": str(s.mlflow_username),
                "MLFLOW_TRACKING_PASSWORD": s.mlflow_password.get_secret_value(),
            }
        return env

    def server_env(self) -> dict[str, str]:
        """What every Prefect server process (API, services, migration) gets."""
        db = prefect_db_url(self.settings.prefect_database_url)
        env = {
            "PREFECT_HOME": str(self.settings.home / "prefect-server"),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": db,
            "PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "false",  # migrated once, by `prefect server database upgrade`
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_API_URL": self.prefect_api_url,
            **redis_env(self.redis_url),
        }
        if self.settings.prefect_api_auth_string is not None:
            env["PREFECT_SERVER_API_AUTH_STRING"] = self.settings.prefect_api_auth_string.get_secret_value()
        return env | self.extra_env

    def client_env(self) -> dict[str, str]:
        """What a worker (and every flow run it starts) gets: the load balancer, the stores."""
        s = self.settings
        env = {
            "PREFECT_HOME": str(s.home / "prefect-client"),
            "PREFECT_API_URL": self.prefect_api_url,
            "ANDON_PREFECT_API_URL": self.prefect_api_url,
            "ANDON_MLFLOW_TRACKING_URI": self.mlflow_url,
            "ANDON_OBJECT_STORE_URL": s.object_store_url,
            "ANDON_CONFIGS_DIR": str(s.configs_dir),
            "ANDON_HOME": str(s.home),
            **self._auth_env(),
            **_aws_env(),
        }
        if s.s3_endpoint_url:
            env["ANDON_S3_ENDPOINT_URL"] = s.s3_endpoint_url
        return env | self.extra_env

    # ---------------------------------------------------------------- processes
    def plan(self) -> list[Proc]:
        """Every long-running process, in start order (the migration runs before them)."""
        py, h = sys.executable, self.host
        server_env = self.server_env()
        out = [
            Proc(
                f"prefect-api-{i}",
                [py, "-m", "prefect", "server", "start", "--host", h, "--port", str(port), "--no-services"],
                server_env | {"PREFECT_HOME": str(self.settings.home / f"prefect-api-{i}")},
                f"http://{h}:{port}/api/health",
            )
            for i, port in enumerate(self.api_ports, 1)
        ]
        out.append(Proc("prefect-services", [py, "-m", "prefect", "server", "services", "start"], server_env))
        mlflow_settings = self.settings.model_copy(update={"mlflow_port": self.mlflow_port})
        (mlflow,) = [svc for svc in services(mlflow_settings) if svc.name == "mlflow"]
        for path, text in mlflow.files:  # the basic-auth app's ini (no secret in it)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            path.chmod(0o600)
        out.append(Proc("mlflow", mlflow.command, mlflow.env | _aws_env() | self.extra_env, mlflow.health_url))
        client_env = self.client_env()
        for plant in self.plants:
            cmd = [py, "-m", "andon.cli", "worker", "--plant", plant, "--prefect-api-url", self.prefect_api_url]
            out.append(Proc(f"worker-{plant}", cmd, client_env, role="client"))
        gateway_env = {
            "ANDON_GATEWAY_API_URLS": ",".join(self.api_urls),  # the gateway fails over by itself
            "ANDON_GATEWAY_OUTBOX_URL": self.settings.gateway_outbox_url,
            "ANDON_CONFIGS_DIR": str(self.settings.configs_dir),
            "ANDON_HOME": str(self.settings.home),
            **({"ANDON_MES_SECRET": self.settings.mes_secret.get_secret_value()} if self.settings.mes_secret else {}),
            **{k: v for k, v in self._auth_env().items() if k.startswith("PREFECT_")},
        }
        cmd = [py, "-m", "andon.cli", "gateway", "--host", h, "--port", str(self.gateway_port)]
        out.append(Proc("gateway", cmd, gateway_env | self.extra_env, f"{self.gateway_url}/healthz", role="client"))
        return out

    def _spawn(self, proc: Proc) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        # this process's settings and S3 credentials stay here: each process gets what its role needs
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ANDON_", "MLFLOW_", "AWS_"))}
        env |= {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true"} | proc.env
        with open(self.logs / f"{proc.name}.log", "ab") as log:
            proc.popen = subprocess.Popen(
                proc.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=REPO_ROOT,  # the deployments' entrypoints (flows/...) are relative to the checkout
                start_new_session=True,  # its own process group: stopped (or killed) whole
            )
        self.procs[proc.name] = proc

    def migrate(self, timeout_s: float = 300) -> None:
        """``prefect server database upgrade -y``: the schema, once, before any server starts."""
        self.logs.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | self.server_env()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
        (self.logs / "prefect-migrate.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise ServiceError(f"prefect server database upgrade failed: {(done.stderr or done.stdout)[-2000:]}")

    def start(self, timeout_s: float | None = None) -> None:
        """Migrate, start every process and the load balancer, wait until all are healthy."""
        timeout_s = timeout_s or self.settings.service_start_timeout_s
        self.migrate()
        self.balancer.start()
        try:
            plan = self.plan()
            # the first API server alone: it registers Prefect's block types, which two servers
            # starting at once on a fresh database race on (a unique violation stops one of them);
            # then the other servers; then their clients (workers, gateway), on a whole server tier
            for phase in (
                plan[:1],
                [p for p in plan[1:] if p.role == "server"],
                [p for p in plan if p.role == "client"],
            ):
                for proc in phase:
                    self._spawn(proc)
                self.wait_healthy(timeout_s, [p.name for p in phase])
        except BaseException:
            self.stop()
            raise

    def wait_healthy(self, timeout_s: float, names: Sequence[str] | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        pending = {n: self.procs[n] for n in (names or self.procs)}
        while pending:
            for name, proc in list(pending.items()):
                assert proc.popen is not None
                if proc.popen.poll() is not None:
                    raise ServiceError(f"{name} exited with {proc.popen.returncode}; log tail:\n{self.log_tail(name)}")
                if proc.health_url is None or is_healthy(proc.health_url, timeout=1.0):
                    del pending[name]
            if pending and time.monotonic() > deadline:
                raise ServiceError(f"{', '.join(pending)} not healthy within {timeout_s:.0f} s; logs in {self.logs}")
            if pending:
                time.sleep(0.3)

    def log_tail(self, name: str, lines: int = 20) -> str:
        try:
            return "\n".join((self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def kill(self, name: str) -> None:
        """SIGKILL ``name``'s whole process group, as a crash (or an OOM kill) would."""
        popen = self.procs[name].popen
        assert popen is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(timeout=30)

    def pids(self) -> set[int]:
        """Every process of the topology now: the leaders and all their descendants (flow runs too)."""
        import psutil

        out: set[int] = set()
        for proc in self.procs.values():
            if proc.popen is None or proc.popen.poll() is not None:
                continue
            with contextlib.suppress(psutil.Error):
                leader = psutil.Process(proc.popen.pid)
                out |= {leader.pid, *(c.pid for c in leader.children(recursive=True))}
        return out

    def stop(self) -> None:
        """TERM each process group, clients first (gateway, workers), then the servers; KILL what stays."""
        for name in reversed(list(self.procs)):
            popen = self.procs[name].popen
            if popen is not None and popen.poll() is None:
                stop_group(popen.pid, grace_s=15.0)
            if popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(timeout=5)
        self.balancer.stop()

    def __enter__(self) -> Topology:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class Balancer:
    """A TCP round-robin load balancer on a background thread; a backend refusing connections is
    skipped. When a backend dies, the connections it held are closed and the clients reconnect.

    ``connections`` counts the connections each backend took.
    """

    def __init__(self, backends: Sequence[tuple[str, int]], host: str = "127.0.0.1", port: int = 0) -> None:
        self.backends = list(backends)
        self.host, self.port = host, port
        self.connections: Counter[int] = Counter()  # by backend port
        self.refused = 0  # connections no backend took
        self._next = itertools.cycle(range(len(self.backends)))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        if self._thread is not None:
            return
        ready = threading.Event()
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            self._server = loop.run_until_complete(asyncio.start_server(self._handle, self.host, self.port))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()

        self._loop, self._thread = loop, threading.Thread(target=run, name="andon-balancer", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise ServiceError("the load balancer did not start")

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            loop.stop()

        loop.call_soon_threadsafe(lambda: loop.create_task(shutdown()))
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            # each connection tries every backend once, from the next in turn (with a shared turn,
            # concurrent connections could each land on the dead backend every time)
            first = next(self._next)
            for k in range(len(self.backends)):
                host, port = self.backends[(first + k) % len(self.backends)]
                try:
                    up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=5)
                except (OSError, TimeoutError):
                    continue
                self.connections[port] += 1
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
                return
            self.refused += 1
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
