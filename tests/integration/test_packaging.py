"""What `pip install andon` puts on a machine: everything under the ``andon`` namespace (the
repository's ``cli/``, ``flows/``, ``tasks/`` become ``andon.cli``, ``andon.flows``, ``andon.tasks``),
the plant configs as package data, and a gateway that runs without the platform's libraries."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import httpx
import pytest

from andon.settings import REPO_ROOT

pytestmark = pytest.mark.integration

# What the `gateway` extra does not install: torch, Prefect, MLflow and the data stack.
PLATFORM_ONLY = (
    "torch", "torchvision", "mlflow", "prefect", "great_expectations", "evidently", "shap", "albumentations",
    "pandas", "numpy", "pyarrow", "duckdb", "PIL", "boto3", "sklearn", "scipy",
)  # fmt: skip


def test_the_package_list_covers_every_folder() -> None:
    cfg = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = {"andon": "andon"} | {k: v for k, v in cfg["package-dir"].items()}
    expected = set()
    for name, folder in dirs.items():
        for init in (REPO_ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO_ROOT / folder).parts
            expected.add(".".join([name, *rel]))
    expected |= {"andon.configs", "andon.configs.plants", "andon.configs.tables"}
    assert set(cfg["packages"]) == expected


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
         str(REPO_ROOT)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = out.glob("andon-*.whl")
    return path


def test_the_wheel_installs_everything_under_the_andon_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"andon"}
    for path in (
        "andon/cli/main.py", "andon/cli/demo/story.py", "andon/flows/retrain.py", "andon/tasks/__init__.py",
        "andon/configs/base.yaml", "andon/configs/governance.yaml", "andon/configs/plants/plant-a.yaml",
        "andon/configs/tables/secom.yaml",
    ):  # fmt: skip
        assert path in names, path
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "andon = andon.cli.main:main" in entry


def test_an_installed_wheel_finds_its_configs_without_a_checkout(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    probe = (
        "import andon, andon.flows.retrain, andon.cli.main\n"
        "from andon.config import list_plants\n"
        "from andon.settings import get_settings\n"
        "print(andon.__file__); print(andon.flows.retrain.__file__)\n"
        "print(get_settings().configs_dir); print(','.join(list_plants()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ANDON_CONFIGS_DIR"} | {"PYTHONPATH": str(target)}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    init, flow, configs, plants = done.stdout.split()
    assert Path(init).is_relative_to(target) and Path(flow).is_relative_to(target)
    assert Path(configs) == target / "andon" / "configs"
    assert plants.split(",") == ["plant-a", "plant-b", "plant-c"]


def test_the_gateway_runs_without_the_platform(tmp_path: Path) -> None:
    """`andon gateway` with torch, Prefect, MLflow, pandas ... made unimportable (what the `gateway`
    extra installs): it starts, takes a signed event into its outbox and answers its health check."""
    from conftest import free_port

    from andon.gateway.signing import headers

    port = free_port()

    blocker = (
        "import sys\n"
        f"for name in {PLATFORM_ONLY!r}:\n"
        "    sys.modules[name] = None  # `import name` raises ImportError\n"
        f"sys.argv = ['andon', 'gateway', '--port', '{port}']\n"
        "from andon.cli.main import main\n"
        "main()\n"
    )
    secret = "s" * 40
    env = os.environ | {
        "ANDON_HOME": str(tmp_path / "home"),
        "ANDON_MES_SECRET": secret,
        "ANDON_PREFECT_API_URL": "http://127.0.0.1:9/api",  # nothing there: the event waits in the outbox
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", blocker], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if proc.poll() is not None:
                pytest.fail(f"the gateway died: {proc.stdout.read() if proc.stdout else ''}")
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        body = b'{"type":"sku.introduced","message_id":"MES-pkg-1","plant":"plant-a","line":"line-1",'
        body += b'"occurred_at":"2026-11-26T08:00:00Z","sku":"SKU-1"}'
        resp = httpx.post(f"{url}/v1/mes/events", content=body, headers=headers(body, secret), timeout=10)
        assert resp.status_code == 202, resp.text
        health = httpx.get(f"{url}/healthz", timeout=10).json()
        assert health["status"] == "ok" and health["pending"] == 1, health
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    for name in PLATFORM_ONLY:
        assert f"No module named '{name}'" not in (proc.stdout.read() if proc.stdout else "")
