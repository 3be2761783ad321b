"""recserve settings: one pydantic-settings object, built by entry points and passed down.

Every field can be set from the environment with the ``RECSERVE_`` prefix; nested
sections use a double underscore, e.g. ``RECSERVE_SERVER__PORT=50051`` or
``RECSERVE_TRAINING__EPOCHS=30``. ``RECSERVE_CONFIG=path.toml`` names an optional
TOML file with the same structure (environment variables win over it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from shared.config.events import EventSettings
from shared.config.server import ServerSettings
from shared.config.training import ModelArchitecture, TrainingSettings, WorkerSettings

__all__ = [
    "ClientSettings",
    "EventSettings",
    "ModelArchitecture",
    "ServerSettings",
    "Settings",
    "TelemetrySettings",
    "TrainingSettings",
    "WorkerSettings",
]


class TelemetrySettings(BaseModel):
    """Metrics, logs and traces of every recserve process."""

    metrics_port: int = Field(9464, ge=0, le=65535)
    """HTTP port of the Prometheus /metrics endpoint of a server or worker; 0 turns it
    off. Processes on one host need different ports (`recserve up` assigns them); a port
    that is taken is logged and metrics are then not exported, the process keeps running."""
    metrics_host: str = "127.0.0.1"
    """Interface the /metrics endpoint listens on. Loopback by default, so metrics are
    not exposed beyond the host; the container image sets 0.0.0.0 for a Prometheus on the
    same container network (deploy/compose.yaml publishes only gRPC)."""
    log_format: Literal["text", "json"] = "text"
    """json: one JSON object per line (time, level, logger, message, request_id, ...)."""
    access_log: bool = False
    """Log one line per RPC (method, status, milliseconds, request id) at INFO."""
    tracing: bool = False
    """OpenTelemetry traces of every RPC through opentelemetry-instrumentation-grpc
    (install recserve[tracing]); exported over OTLP to OTEL_EXPORTER_OTLP_ENDPOINT."""


class ClientSettings(BaseModel):
    """How recserve's own clients (the CLI, the console, benchmarks) reach a server."""

    token: SecretStr | None = None
    """Bearer token sent with every call (default for --token)."""
    tls_ca: Path | None = None
    """PEM CA bundle to verify the server with; set it (or tls_cert) to use TLS."""
    tls_cert: Path | None = None
    """PEM client certificate, for servers that require mTLS."""
    tls_key: Path | None = None
    """PEM key of tls_cert."""
    tls_server_name: str | None = None
    """Expected name in the server's certificate when it differs from the target host."""


class Settings(BaseSettings):
    """All recserve settings. See the README's configuration table."""

    model_config = SettingsConfigDict(
        env_prefix="RECSERVE_", env_nested_delimiter="__", extra="ignore"
    )

    data_dir: Path = Path("./var")
    """Where the embedded configuration keeps its database, broker and bundles."""
    database_url: str = ""
    """Any SQLAlchemy URL. Empty: SQLite at {data_dir}/recserve.db."""
    broker_url: str = ""
    """Celery broker. Empty: kombu's SQLAlchemy transport on {data_dir}/broker.db."""
    models_dir: Path | None = None
    """Where bundles are written. Empty: {data_dir}/models. Shared storage when distributed."""
    log_level: str = "INFO"

    server: ServerSettings = ServerSettings()
    worker: WorkerSettings = WorkerSettings()
    training: TrainingSettings = TrainingSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    events: EventSettings = EventSettings()
    client: ClientSettings = ClientSettings()
    db_connect_timeout_s: float = Field(5.0, gt=0.0)
    """Seconds to wait for a database connection before the call fails (UNAVAILABLE)."""
    db_statement_timeout_s: float = Field(30.0, gt=0.0)
    """PostgreSQL statement_timeout of every connection."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("RECSERVE_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @property
    def db_url(self) -> str:
        """The database URL, password included: never print it (use safe_db_url)."""
        return self.database_url or f"sqlite:///{self.data_dir / 'recserve.db'}"

    @property
    def safe_db_url(self) -> str:
        """The database URL with its password masked, for logs and reports."""
        from sqlalchemy.engine import make_url

        return make_url(self.db_url).render_as_string(hide_password=True)

    @property
    def broker(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.data_dir / 'broker.db'}"

    @property
    def bundles_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    def bundle_path(self, artifact_path: str) -> Path:
        """Where a model version's bundle lives: artifact paths are stored relative to the
        models directory (absolute ones, from older versions, are used as they are)."""
        path = Path(artifact_path)
        return path if path.is_absolute() else self.bundles_dir / path

    @property
    def embedded_broker(self) -> bool:
        """True when the broker is the SQLite file of the embedded configuration."""
        return self.broker.startswith("sqla+sqlite")
