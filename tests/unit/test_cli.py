import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from andon.cli.main import app

runner = CliRunner()
COMMANDS = [
    "up",
    "down",
    "status",
    "config",
    "synth",
    "ingest",
    "tune",
    "store",
    "score",
    "score-sensor",
    "serve",
    "gateway",
    "mes",
    "label",
    "deployments",
    "deploy",
    "governance",
    "explain",
    "audit",
    "demo",
]


def test_help_lists_every_command_with_an_example() -> None:
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    for cmd in COMMANDS:
        assert f"andon {cmd}" in result.output, f"no worked example for {cmd}"
    groups = ("config", "store", "mes", "label", "deployments", "governance")  # their subcommands have one
    for cmd in [c for c in COMMANDS if c not in groups]:
        sub = runner.invoke(app, [cmd, "--help"], env={"COLUMNS": "120"})
        assert sub.exit_code == 0 and "Example: andon" in sub.output


def test_help_imports_no_heavy_library() -> None:
    heavy = {"torch", "prefect", "mlflow", "pandas", "great_expectations", "evidently", "shap", "boto3"}
    code = f"import sys; from cli.main import app; print(sorted({heavy!r} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_config_show_prints_the_merged_config() -> None:
    result = runner.invoke(app, ["config", "show", "plant-b", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["id"] == "plant-b" and data["lighting"]["unevenness"] == 0.25
    assert data["recipe"]["model"]["name"] == "small_cnn"  # inherited from base.yaml
    yaml_out = runner.invoke(app, ["config", "show", "plant-c"])
    assert "rotation_deg: -8.0" in yaml_out.output and "configs/plants/plant-c.yaml" in yaml_out.output


def test_user_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    env = {"ANDON_HOME": str(tmp_path)}
    for args, needle in [
        (["config", "show", "plant-z"], "error: unknown plant 'plant-z'"),
        (["synth", "--plant", "plant-b", "--parts", "5", "--line", "line-9"], "unknown line 'line-9'"),
        (["ingest", "--plant", "plant-a", str(tmp_path / "nope")], "not a folder"),
        (["synth", "--plant", "plant-b", "--start", "2026-11-26T06:00"], "--start: give a timezone"),
    ]:
        proc = subprocess.run(
            [sys.executable, "-m", "andon.cli", *args], capture_output=True, text=True, env={**_env(), **env}
        )
        assert proc.returncode == 1, (args, proc.stderr)
        assert needle in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("ANDON_")}


def test_synth_and_store_ls_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANDON_HOME", str(tmp_path))
    result = runner.invoke(
        app,
        [
            "synth",
            "--plant",
            "plant-c",
            "--parts",
            "30",
            "--workers",
            "1",
            "--start",
            "2026-11-26T06:00:00+00:00",
            "--brightness",
            "0.7",
            "--new-sku",
            "ring",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "raw batch(es)" in result.output
    listing = runner.invoke(app, ["store", "ls", "plant-c/line-1/raw/2026-11-26/", "--limit", "3"])
    assert listing.exit_code == 0
    assert "33 object(s)" in listing.output  # 30 images + metadata + sensors + batch.json
    from andon.storage import LocalObjectStore

    store = LocalObjectStore(tmp_path / "objects")
    (key,) = [o.key for o in store.list("plant-c/") if o.key.endswith("batch.json")]
    batch = json.loads(store.get(key))
    assert batch["details"]["drift"]["brightness"] == 0.7
    assert batch["details"]["new_sku"]["shape"] == "ring"


@pytest.mark.parametrize(
    "args",
    [
        ["config", "list"],
        ["store", "ls", "plant-a/"],
        ["datasets", "list", "--plant", "plant-a"],
        ["alerts", "list", "--plant", "plant-a"],
        ["label", "list", "--plant", "plant-a"],
    ],
)
def test_every_list_command_speaks_json(args: list[str], andon_home: Path) -> None:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # nothing but the JSON on stdout
    if args[:2] == ["config", "list"]:
        assert data["plant-a"]["id"] == "plant-a" and "quality" in data["plant-a"]
    else:
        assert data == []  # a fresh home holds nothing yet
