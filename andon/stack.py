"""The embedded stack: a Prefect server and an MLflow tracking server as background processes.

``andon up`` starts what is not running, waits for both health endpoints and prints the UIs;
a second ``up`` reuses what runs. Each process gets a PID file (JSON: pid, port, command, start
time; mode 0600) and a log file under ``$ANDON_HOME``.

Authentication (docs/security.md): with ``PREFECT_API_AUTH_STRING`` set the Prefect server
requires it (Basic auth on every route but the health probe); with ``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD`` set the MLflow server runs its basic-auth app with that user as its
admin. The embedded default (SQLite on loopback) may run open; the production configuration
(PostgreSQL, or an interface other than loopback) refuses to start without both credentials.
Secrets reach the servers through their environment, never their command line: the MLflow
backend URI (with its database password) goes in ``MLFLOW_BACKEND_STORE_URI``.

``andon down`` stops only processes whose PID file it wrote and whose command line still
matches, so it never kills a stranger that reused a PID. Services start in their own process
group, and ``down`` signals the whole group (servers fork workers), TERM first, KILL after a
grace period.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from andon.errors import ConfigError, PortInUseError, ServiceError
from andon.settings import AndonSettings


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    health_path: str
    ui_path: str
    command: list[str]
    env: dict[str, str]  # may hold secrets: given to the process, never written to the PID file
    host: str
    files: tuple[tuple[Path, str], ...] = ()  # written (0600) before the process starts

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def health_url(self) -> str:
        return self.base_url + self.health_path

    @property
    def ui_url(self) -> str:
        return self.base_url + self.ui_path


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    state: str  # "running", "stopped", "unhealthy", "stale pid file", "foreign process on port"
    pid: int | None
    url: str
    log: Path


def prefect_db_url(url: str) -> str:
    # Prefect wants an async driver; accept the plain postgresql:// spelling too
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    return url


def _mlflow_db_url(url: str) -> str:
    # MLflow's SQLAlchemy store needs a sync driver; psycopg2 is the one Andon installs
    if url.startswith(("postgresql://", "postgres://", "postgresql+asyncpg://")):
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def production(settings: AndonSettings) -> bool:
    """The stack is shared (PostgreSQL) or reachable beyond this machine (not loopback): it must
    not run without authentication."""
    shared = not (
        settings.prefect_database_url.startswith("sqlite") and settings.mlflow_backend_store_uri.startswith("sqlite")
    )
    return shared or not _loopback(settings.host)


def require_authentication(settings: AndonSettings) -> None:
    """Refuse to start the production configuration open (see docs/security.md)."""
    if not production(settings):
        return
    missing = []
    if settings.prefect_api_auth_string is None:
        missing.append("PREFECT_API_AUTH_STRING ('user:password' for the Prefect API)")
    if settings.mlflow_password is None:
        missing.append("MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (the MLflow basic-auth admin)")
    if missing:
        raise ConfigError(
            f"environment: the production configuration (databases on PostgreSQL or host {settings.host}) "
            f"starts only authenticated; set {' and '.join(missing)} (docs/security.md)"
        )


def _mlflow_auth_ini(settings: AndonSettings) -> str:
    # users live in their own SQLite file beside the tracking data: no database password in here
    # (the auth app reads database_uri from this file only); least privilege for new users
    return (
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{settings.home / 'mlflow' / 'basic_auth.db'}\n"
        f"admin_username = {settings.mlflow_username}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )


def services(settings: AndonSettings) -> list[Service]:
    """The processes ``andon up`` manages, fully resolved from settings."""
    home = settings.home
    py = sys.executable
    prefect_env = {
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_API_HOST": settings.host,
        "PREFECT_SERVER_API_PORT": str(settings.prefect_port),
        "PREFECT_API_URL": f"http://{settings.host}:{settings.prefect_port}/api",
        "PREFECT_UI_API_URL": f"http://{settings.host}:{settings.prefect_port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": prefect_db_url(settings.prefect_database_url),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": prefect_db_url(settings.prefect_database_url),
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    if settings.prefect_api_auth_string is not None:
        auth = settings.prefect_api_auth_string.get_secret_value()
        prefect_env |= {"PREFECT_SERVER_API_AUTH_STRING": auth, "PREFECT_API_AUTH_STRING": auth}
    prefect = Service(
        name="prefect",
        port=settings.prefect_port,
        health_path="/api/health",
        ui_path="/",
        command=[
            py,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            settings.host,
            "--port",
            str(settings.prefect_port),
            "--analytics-off",
        ],
        env=prefect_env,
        host=settings.host,
    )
    mlflow_env: dict[str, str] = {
        "MLFLOW_HOST": settings.host,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # no job runner and huey consumers (~240 MB each): Andon runs no MLflow jobs
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        # read by `mlflow server` itself (its --backend-store-uri envvar): the database password stays
        # off the command line, which every user of the machine can read in /proc
        "MLFLOW_BACKEND_STORE_URI": _mlflow_db_url(settings.mlflow_backend_store_uri),
    }
    if settings.s3_endpoint_url:
        mlflow_env["MLFLOW_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    app: list[str] = []
    files: tuple[tuple[Path, str], ...] = ()
    if settings.mlflow_password is not None:
        ini = home / "mlflow" / "basic_auth.ini"
        app = ["--app-name", "basic-auth"]
        files = ((ini, _mlflow_auth_ini(settings)),)
        key = settings.mlflow_secret_key.get_secret_value() if settings.mlflow_secret_key else secrets.token_hex(32)
        mlflow_env |= {
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_AUTH_ADMIN_USERNAME": str(settings.mlflow_username),
            "MLFLOW_AUTH_ADMIN_PASSWORD": settings.mlflow_password.get_secret_value(),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": key,
        }
    mlflow = Service(
        name="mlflow",
        port=settings.mlflow_port,
        health_path="/health",
        ui_path="/",
        command=[
            py,
            "-m",
            "mlflow",
            "server",
            "--host",
            settings.host,
            "--port",
            str(settings.mlflow_port),
            *app,
            "--serve-artifacts",
            "--artifacts-destination",
            settings.mlflow_artifacts_destination,
            "--workers",
            "1",
        ],
        env=mlflow_env,
        host=settings.host,
        files=files,
    )
    out = [prefect, mlflow]
    if settings.evidently_ui and not settings.evidently_workspace.startswith(("http://", "https://")):
        out.append(
            Service(
                name="evidently",
                port=settings.evidently_port,
                health_path="/api/version",
                ui_path="/",
                command=[
                    py,
                    "-c",
                    "import sys; from evidently.cli import app; sys.argv[0] = 'evidently'; app()",
                    "ui",
                    "--host",
                    settings.host,
                    "--port",
                    str(settings.evidently_port),
                    "--workspace",
                    settings.evidently_workspace,
                ],
                env={},
                host=settings.host,
            )
        )
    if not settings.ui_enabled:
        return out
    ui = Service(
        name="ui",
        port=settings.ui_port,
        health_path="/healthz",
        ui_path="/",
        command=[py, "-m", "andon.cli", "ui", "--host", settings.host, "--port", str(settings.ui_port)],
        env={"PREFECT_API_URL": settings.prefect_api_url},
        host=settings.host,
    )
    return [*out, ui]


def _run_dir(settings: AndonSettings) -> Path:
    return settings.home / "run"


def _pid_file(settings: AndonSettings, name: str) -> Path:
    return _run_dir(settings) / f"{name}.pid.json"


def log_file(settings: AndonSettings, name: str) -> Path:
    return settings.home / "logs" / f"{name}.log"


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def is_healthy(url: str, timeout: float = 2.0) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return bool(200 <= resp.status < 300)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _cmdline(pid: int) -> list[str] | None:
    import psutil

    try:
        return list(psutil.Process(pid).cmdline())
    except (psutil.Error, OSError):
        return None


def _alive(pid: int) -> bool:
    """Running (a zombie is not alive for our purposes)."""
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def _read_pid(settings: AndonSettings, name: str) -> dict[str, object] | None:
    path = _pid_file(settings, name)
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else None
    except (OSError, json.JSONDecodeError):
        return None


def _ours(record: dict[str, object]) -> bool:
    """The PID in ``record`` is alive and still runs the command we started."""
    pid = record.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        return False
    return _cmdline(pid) == record.get("command")


def service_status(settings: AndonSettings) -> list[ServiceStatus]:
    out = []
    for svc in services(settings):
        record = _read_pid(settings, svc.name)
        log = log_file(settings, svc.name)
        if record and _ours(record):
            pid = int(record["pid"])  # type: ignore[call-overload]
            state = "running" if is_healthy(svc.health_url) else "unhealthy"
            out.append(ServiceStatus(svc.name, state, pid, svc.ui_url, log))
        elif record:
            out.append(ServiceStatus(svc.name, "stale pid file", None, svc.ui_url, log))
        elif _port_open(svc.host, svc.port):
            out.append(ServiceStatus(svc.name, "foreign process on port", None, svc.ui_url, log))
        else:
            out.append(ServiceStatus(svc.name, "stopped", None, svc.ui_url, log))
    return out


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by this user only (0600), whatever the umask or an older file's mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _start(settings: AndonSettings, svc: Service) -> subprocess.Popen[bytes]:
    for sub in ("run", "logs", "prefect", "mlflow"):
        (settings.home / sub).mkdir(parents=True, exist_ok=True)
        (settings.home / sub).chmod(0o700)
    for path, text in svc.files:
        _write_private(path, text)
    if not settings.mlflow_artifacts_destination.startswith("s3://"):
        Path(settings.mlflow_artifacts_destination).mkdir(parents=True, exist_ok=True)
    log = log_file(settings, svc.name)
    env = {**os.environ, **svc.env}
    with open(log, "ab") as fh:
        fh.write(f"\n--- andon up {time.strftime('%Y-%m-%dT%H:%M:%S')} ---\n".encode())
        proc = subprocess.Popen(
            svc.command,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=settings.home,
            start_new_session=True,
        )
    record = {"pid": proc.pid, "port": svc.port, "command": svc.command, "started": time.time()}
    _write_private(_pid_file(settings, svc.name), json.dumps(record))  # the command holds no secret
    return proc


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def up(settings: AndonSettings, on_event: Callable[[str], None] | None = None) -> list[ServiceStatus]:
    """Start every service that is not already running (ours and healthy), then wait for health."""
    say = on_event or (lambda _msg: None)
    require_authentication(settings)
    started: dict[str, tuple[Service, subprocess.Popen[bytes]]] = {}
    problems: list[str] = []
    for svc in services(settings):
        record = _read_pid(settings, svc.name)
        if record and _ours(record):
            say(f"{svc.name}: already running (pid {record['pid']}), reusing it")
            continue
        if record:
            _pid_file(settings, svc.name).unlink(missing_ok=True)
        if _port_open(svc.host, svc.port):
            problems.append(
                f"{svc.name}: port {svc.port} on {svc.host} is in use by a process Andon did not start; "
                f"stop it or choose another port (ANDON_{svc.name.upper()}_PORT)"
            )
            continue
        say(f"{svc.name}: starting on {svc.base_url} (log {log_file(settings, svc.name)})")
        started[svc.name] = (svc, _start(settings, svc))
    if problems:
        for svc, proc in started.values():
            stop_group(proc.pid)
            _pid_file(settings, svc.name).unlink(missing_ok=True)
        raise PortInUseError("\n".join(problems))

    deadline = time.monotonic() + settings.service_start_timeout_s
    pending = dict(started)
    while pending:
        for name, (svc, proc) in list(pending.items()):
            if proc.poll() is not None:
                tail = _log_tail(log_file(settings, name))
                _pid_file(settings, name).unlink(missing_ok=True)
                down(settings)
                raise ServiceError(f"{name} exited with code {proc.returncode} while starting; log tail:\n{tail}")
            if is_healthy(svc.health_url, timeout=1.0):
                say(f"{name}: healthy at {svc.health_url}")
                del pending[name]
        if pending and time.monotonic() > deadline:
            names = ", ".join(pending)
            down(settings)
            raise ServiceError(
                f"{names} did not answer its health endpoint "
                f"within {settings.service_start_timeout_s:.0f} s; "
                f"see {settings.home / 'logs'}"
            )
        if pending:
            time.sleep(0.5)
    return service_status(settings)


def stop_group(pid: int, grace_s: float = 15.0) -> None:
    """TERM the process group of ``pid`` (servers fork workers), KILL it after ``grace_s``."""
    pgid = pid  # services start with start_new_session=True: they lead their own group
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it when `up` ran in this process (tests)
        if not _group_alive(pgid):
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    """Any process of the group still running (zombies aside)."""
    import psutil

    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, OSError):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                return True
    return False


def down(settings: AndonSettings, on_event: Callable[[str], None] | None = None) -> list[str]:
    """Stop the services this home's ``up`` started; returns the names stopped."""
    say = on_event or (lambda _msg: None)
    stopped = []
    for svc in services(settings):
        record = _read_pid(settings, svc.name)
        if record is None:
            continue
        if _ours(record):
            pid = int(record["pid"])  # type: ignore[call-overload]
            say(f"{svc.name}: stopping pid {pid}")
            stop_group(pid)
            stopped.append(svc.name)
        else:
            say(f"{svc.name}: not running (removing stale pid file)")
        _pid_file(settings, svc.name).unlink(missing_ok=True)
    return stopped
