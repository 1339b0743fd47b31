"""Process-wide settings from ``ANDON_*`` environment variables.

Example:
    >>> from andon.settings import get_settings
    >>> s = get_settings()
    >>> s.object_store_url.startswith(("file://", "s3://"))
    True

Nothing here touches the disk: folders are created by the commands that need them.
Secrets (AWS keys) are read by boto3 from the standard AWS variables, never stored here.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_configs_dir() -> Path:
    """The checkout's ``configs/``; installed from a wheel, the copy shipped as ``andon/configs``."""
    checkout = REPO_ROOT / "configs"
    return checkout if (checkout / "base.yaml").is_file() else Path(__file__).resolve().parent / "configs"


Port = Annotated[int, Field(ge=1, le=65535)]
MIN_PASSWORD_CHARS = 12  # MLflow's own minimum; Prefect's auth string gets the same
MIN_SECRET_BYTES = 32  # an HMAC-SHA256 key shorter than its output is guessable by brute force


class AndonSettings(BaseSettings):
    """Settings for one Andon installation (embedded defaults under ``ANDON_HOME``)."""

    model_config = SettingsConfigDict(env_prefix="ANDON_", extra="ignore", validate_default=True)

    home: Path = Field(
        default=Path("~/.andon"),
        description="Root of the embedded stack: databases, logs, PID files, local object store.",
    )
    configs_dir: Path = Field(
        default_factory=default_configs_dir,
        description="Folder holding base.yaml and plants/<plant>.yaml.",
    )
    object_store_url: str = Field(
        default="",
        description="file:///abs/path or s3://bucket[/prefix]; default file://$ANDON_HOME/objects.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="Endpoint of an S3-compatible store (MinIO, Ceph, moto); None = AWS."
    )
    s3_region: str = Field(default="us-east-1", description="Region name sent to the S3 endpoint.")
    s3_max_attempts: int = Field(
        default=5, ge=1, le=20, description="Attempts per S3 call; transient errors back off exponentially."
    )
    host: str = Field(default="127.0.0.1", description="Interface the embedded services bind to.")
    prefect_port: Port = Field(default=4200, description="Port of the embedded Prefect server.")
    mlflow_port: Port = Field(default=5000, description="Port of the embedded MLflow tracking server.")
    prefect_api_url: str = Field(
        default="", description="Prefect API; default the embedded server http://HOST:PREFECT_PORT/api."
    )
    mlflow_tracking_uri: str = Field(
        default="", description="MLflow tracking URI; default the embedded server http://HOST:MLFLOW_PORT."
    )
    prefect_database_url: str = Field(
        default="",
        description="Database of the embedded Prefect server; default SQLite under ANDON_HOME "
        "(postgresql+asyncpg://... for production).",
    )
    mlflow_backend_store_uri: str = Field(
        default="",
        description="Backend store of the embedded MLflow server; default SQLite under ANDON_HOME "
        "(postgresql://... for production).",
    )
    mlflow_artifacts_destination: str = Field(
        default="",
        description="Where the MLflow server stores artifacts; default <object store>/mlflow-artifacts "
        "for s3://, else $ANDON_HOME/mlflow/artifacts.",
    )
    mes_secret: SecretStr | None = Field(
        default=None,
        description="Shared secret of the MES webhook signatures (HMAC-SHA256, >= 32 bytes); the gateway needs it.",
    )
    service_token: SecretStr | None = Field(
        default=None,
        description="Bearer token of `andon serve` (>= 32 bytes); required off loopback and in the authenticated "
        "configuration.",
    )
    gateway_outbox_url: str = Field(
        default="",
        description="The MES gateway's durable outbox; default SQLite under ANDON_HOME (postgresql://... by URL).",
    )
    gateway_port: Port = Field(default=8090, description="Port of `andon gateway`.")
    gateway_api_urls: str = Field(
        default="",
        description="Prefect API servers the gateway forwards to, comma-separated: it moves to the next when "
        "one is unreachable (replicas on one database and Redis, docs/scaling.md); default ANDON_PREFECT_API_URL.",
    )
    predictions_retention_days: int = Field(
        default=400,
        ge=0,
        le=36_500,
        description="Prediction log hours older than this are removed by `andon log compact` (0: keep forever).",
    )
    ui_port: Port = Field(default=8070, description="Port of `andon ui`, the floor's web page.")
    ui_enabled: bool = Field(
        default=True, description="Whether `andon up` starts `andon ui` beside Prefect and MLflow."
    )
    evidently_workspace: str = Field(
        default="",
        description="Evidently workspace each drift report is added to (a project per plant): a folder, or the "
        "http(s) URL of an `evidently ui` service; default ANDON_HOME/evidently.",
    )
    evidently_snapshots: bool = Field(default=True, description="Add every drift report to the Evidently workspace.")
    evidently_ui: bool = Field(default=False, description="Whether `andon up` starts `evidently ui` on the workspace.")
    evidently_port: Port = Field(default=8075, description="Port of `evidently ui` when `andon up` starts it.")
    ui_url: str = Field(
        default="",
        description="Where people reach `andon ui` (links in Prefect artifacts and Label Studio tasks); default "
        "http://HOST:UI_PORT.",
    )
    ui_secret: SecretStr | None = Field(
        default=None,
        description="Signing key of `andon ui` sessions and links (>= 32 bytes); default a random key kept "
        "in ANDON_HOME/ui/secret.",
    )
    service_start_timeout_s: float = Field(
        default=90.0, gt=0, le=900, description="How long `andon up` waits for a health endpoint."
    )
    # --- authentication (docs/security.md). Read from the variables Prefect's and MLflow's own
    # clients read, so one variable serves the servers `andon up` starts, the flows, the workers
    # and Andon's own HTTP calls. Never on a command line, never in a config file.
    prefect_api_auth_string: SecretStr | None = Field(
        default=None,
        validation_alias="PREFECT_API_AUTH_STRING",
        description="'user:password' of the Prefect API (Basic auth; the server's PREFECT_SERVER_API_AUTH_STRING). "
        "Required by the production configuration.",
    )
    mlflow_username: str | None = Field(
        default=None,
        validation_alias="MLFLOW_TRACKING_USERNAME",
        min_length=1,
        max_length=64,
        description="MLflow basic-auth user (the admin `andon up` bootstraps); required by the production config.",
    )
    mlflow_password: SecretStr | None = Field(
        default=None,
        validation_alias="MLFLOW_TRACKING_PASSWORD",
        description="MLflow basic-auth password (>= 12 characters, MLflow's rule).",
    )
    mlflow_secret_key: SecretStr | None = Field(
        default=None,
        validation_alias="MLFLOW_FLASK_SERVER_SECRET_KEY",
        description="CSRF key of the MLflow auth app; default: a random one per `andon up`.",
    )

    @field_validator("home", "configs_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("mes_secret", "service_token", "ui_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            return None  # set but empty: the same as unset (the gateway says to set it)
        if value is not None and len(value.get_secret_value().encode()) < MIN_SECRET_BYTES:
            n = len(value.get_secret_value().encode())
            raise ValueError(
                f"is {n} bytes: use at least {MIN_SECRET_BYTES} random bytes (e.g. `openssl rand -hex 32`), "
                "the same value on the MES (or the scoring service's clients)"
            )
        return value

    @field_validator("prefect_api_auth_string")
    @classmethod
    def _auth_string(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        user, sep, password = value.get_secret_value().partition(":")
        if not (user and sep and len(password) >= MIN_PASSWORD_CHARS):
            raise ValueError(f"must read 'user:password' with a password of at least {MIN_PASSWORD_CHARS} characters")
        return value

    @field_validator("mlflow_password")
    @classmethod
    def _mlflow_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if len(value.get_secret_value()) < MIN_PASSWORD_CHARS:
            raise ValueError(f"use at least {MIN_PASSWORD_CHARS} characters (MLflow refuses shorter passwords)")
        return value

    @model_validator(mode="after")
    def _mlflow_pair(self) -> AndonSettings:
        if (self.mlflow_username is None) != (self.mlflow_password is None):
            raise ValueError("MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD go together: set both or neither")
        return self

    @property
    def authenticated(self) -> bool:
        """Both servers' credentials are configured."""
        return self.prefect_api_auth_string is not None and self.mlflow_password is not None

    @field_validator("object_store_url")
    @classmethod
    def _store_url(cls, value: str) -> str:
        if value and not value.startswith(("file://", "s3://")):
            raise ValueError(f"must start with file:// or s3://, got {value!r}")
        return value

    @model_validator(mode="after")
    def _derive_defaults(self) -> AndonSettings:
        if not self.object_store_url:
            self.object_store_url = f"file://{self.home / 'objects'}"
        if not self.prefect_api_url:
            self.prefect_api_url = f"http://{self.host}:{self.prefect_port}/api"
        if not self.mlflow_tracking_uri:
            self.mlflow_tracking_uri = f"http://{self.host}:{self.mlflow_port}"
        if not self.prefect_database_url:
            self.prefect_database_url = f"sqlite+aiosqlite:///{self.home / 'prefect' / 'prefect.db'}"
        if not self.evidently_workspace:
            self.evidently_workspace = str(self.home / "evidently")
        if not self.ui_url:
            self.ui_url = f"http://{self.host}:{self.ui_port}"
        self.ui_url = self.ui_url.rstrip("/")
        if not self.gateway_outbox_url:
            self.gateway_outbox_url = f"sqlite:///{self.home / 'gateway' / 'outbox.db'}"
        if not self.mlflow_backend_store_uri:
            self.mlflow_backend_store_uri = f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}"
        if not self.mlflow_artifacts_destination:
            if self.object_store_url.startswith("s3://"):
                self.mlflow_artifacts_destination = self.object_store_url.rstrip("/") + "/mlflow-artifacts"
            else:
                self.mlflow_artifacts_destination = str(self.home / "mlflow" / "artifacts")
        return self


@lru_cache(maxsize=1)
def get_settings() -> AndonSettings:
    """The settings of this process, read once from the environment."""
    from pydantic import ValidationError

    from andon.errors import ConfigError

    try:
        return AndonSettings()
    except ValidationError as exc:
        problems = "; ".join(f"{_env_name(err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"environment: {problems}") from None


def _env_name(loc: tuple[int | str, ...]) -> str:
    name = "_".join(str(p) for p in loc).upper()
    if not name:  # a rule over several variables: its message names them
        return "settings"
    native = {str(f.validation_alias) for f in AndonSettings.model_fields.values() if f.validation_alias}
    return name if name in native else f"ANDON_{name}"


def prefect_auth_headers(settings: AndonSettings | None = None) -> dict[str, str]:
    """The Authorization header Prefect's API wants (what its own client sends for
    PREFECT_API_AUTH_STRING), for Andon's direct HTTP calls; empty when no credential is set."""
    import base64

    secret = (settings or get_settings()).prefect_api_auth_string
    if secret is None:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(secret.get_secret_value().encode()).decode()}


def reset_settings() -> None:
    """Forget the cached settings (tests and CLI options that change the environment)."""
    get_settings.cache_clear()
