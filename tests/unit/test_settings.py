from pathlib import Path

import pytest

from andon.errors import ConfigError
from andon.settings import AndonSettings, get_settings


def test_defaults_live_under_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ANDON_HOME", str(tmp_path / "h"))
    s = AndonSettings()
    assert s.home == (tmp_path / "h").resolve()
    assert s.object_store_url == f"file://{s.home / 'objects'}"
    assert s.prefect_api_url == "http://127.0.0.1:4200/api"
    assert s.mlflow_tracking_uri == "http://127.0.0.1:5000"
    assert s.mlflow_backend_store_uri == f"sqlite:///{s.home / 'mlflow' / 'mlflow.db'}"
    assert s.prefect_database_url.startswith("sqlite+aiosqlite:///")
    assert not (tmp_path / "h").exists(), "reading settings must not create folders"


def test_s3_store_puts_mlflow_artifacts_in_the_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANDON_OBJECT_STORE_URL", "s3://factory-data")
    monkeypatch.setenv("ANDON_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("ANDON_MLFLOW_PORT", "5055")
    s = AndonSettings()
    assert s.mlflow_artifacts_destination == "s3://factory-data/mlflow-artifacts"
    assert s.mlflow_tracking_uri == "http://127.0.0.1:5055"


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("ANDON_PREFECT_PORT", "70000", "ANDON_PREFECT_PORT"),
        ("ANDON_OBJECT_STORE_URL", "ftp://x", "ANDON_OBJECT_STORE_URL: Value error, must start with file:// or s3://"),
        ("ANDON_S3_MAX_ATTEMPTS", "0", "ANDON_S3_MAX_ATTEMPTS"),
    ],
)
def test_bad_environment_is_a_clear_config_error(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match="environment: ") as info:
        get_settings()
    assert needle in str(info.value)
