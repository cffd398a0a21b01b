"""One configuration model for every entry point.

`RecsysConfig` is built once where a process starts (CLI, Ray job, Serve builder,
actor constructor) from, in rising priority: a YAML file, `RECSYS_*` environment
variables (`RECSYS_STORAGE_ROOT` sets `storage.root`, `RECSYS_API_KEYS` sets
`api.keys`), and explicit overrides such as command-line flags. It is then passed
down as a frozen value; nothing reads settings from module globals.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, create_model, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from recsys_ray.schemas import INTERACTION_TYPES


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageConfig(Section):
    """Where data lives: a local path or `s3://bucket/prefix` (MinIO and other
    S3-compatible stores through `endpoint_url` or `AWS_ENDPOINT_URL`)."""

    root: str = "./recsys-data"
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None


def _as_utc(cls, value: datetime | None) -> datetime | None:
    """A naive datetime is taken as UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


class ValidationConfig(Section):
    """Limits every ingested row is checked against (HTTP, Kafka and batch alike)."""

    min_timestamp: datetime = datetime(1970, 1, 1, tzinfo=timezone.utc)
    max_timestamp: datetime | None = Field(
        default=None, description="Latest accepted event time; default now + max_future"
    )
    max_future: timedelta = timedelta(days=1)
    max_id_length: int = Field(default=128, ge=1, le=4096)
    rating_min: float = 1.0
    rating_max: float = 5.0

    _utc = field_validator("min_timestamp", "max_timestamp")(_as_utc)

    def time_range(self) -> tuple[datetime, datetime]:
        """The accepted [min, max] event-time window, resolved now."""
        upper = self.max_timestamp or datetime.now(timezone.utc) + self.max_future
        return self.min_timestamp, upper

    def with_window_fixed(self) -> "ValidationConfig":
        """This config with `max_timestamp` resolved now, so that every chunk, block or
        worker of one file or build accepts the same time window."""
        return self.model_copy(update={"max_timestamp": self.time_range()[1]})


class BuildConfig(Section):
    """Options of one training-data build; all of them land in the manifest."""

    interactions: Annotated[list[str], NoDecode] = Field(default_factory=list)
    items: Annotated[list[str], NoDecode] = Field(default_factory=list)
    tenant: str | None = None
    out: str | None = None
    version: str | None = None
    seed: int = 42
    negatives: int = Field(default=4, ge=0, le=1000)
    sampling: Literal["uniform", "popularity"] = "uniform"
    popularity_alpha: float = Field(default=0.75, ge=0.0, le=4.0)
    positive_types: Annotated[tuple[str, ...], NoDecode] = ("click", "like", "add_to_cart", "purchase")
    split_strategy: Literal["time", "leave_last_out"] = "time"
    test_fraction: float = Field(default=0.1, gt=0.0, lt=1.0)
    cutoff: datetime | None = None
    parallelism: int | None = Field(default=None, ge=1)
    shards: int | None = Field(default=None, ge=1)
    rows_per_shard: int = Field(default=1_000_000, ge=1)
    feature_time: Literal["event", "cutoff"] = Field(
        default="event", description="event: each row's features as of its own time; cutoff: as of the cutoff")
    windows: Annotated[tuple[int, ...], NoDecode] = Field(
        default=(7, 30), description="Windows in days for user_events_{N}d / item_events_{N}d (empty: none)")
    history: int = Field(default=20, ge=0, le=1000, description="Last N events of the user (0: no history columns)")
    min_frequency: int = Field(default=1, ge=1, description="Vocabulary values counted fewer times map to 1 (OOV)")
    heavy_item_events: int | None = Field(
        default=None, ge=1, description="In event mode, an item with more events is split into time slices of "
                                        "about this many events (default: an average partition's events, at "
                                        "least 100,000)")
    eval_negatives: int = Field(default=100, ge=0, le=100_000,
                                description="Sampled candidates per user in the evaluation set")

    @field_validator("interactions", "items", mode="before")
    @classmethod
    def _split_uris(cls, value: Any) -> Any:
        return _string_list(value)

    @field_validator("positive_types", mode="before")
    @classmethod
    def _positive_types(cls, value: Any) -> Any:
        value = tuple(str(v).lower() for v in _string_list(value))
        unknown = sorted(set(value) - set(INTERACTION_TYPES))
        if unknown:
            raise ValueError(f"unknown interaction types {unknown}; known: {list(INTERACTION_TYPES)}")
        if not value:
            raise ValueError("at least one positive interaction type is required")
        return value

    @field_validator("windows", mode="before")
    @classmethod
    def _windows(cls, value: Any) -> Any:
        days = []
        for part in _string_list(value):
            text = str(part).strip().lower()
            number = text[:-1] if text.endswith("d") else text
            if not number.isdigit() or int(number) < 1:
                raise ValueError(f"window {part!r} is not a positive number of days such as 7d")
            days.append(int(number))
        if len(set(days)) != len(days):
            raise ValueError(f"windows must be distinct, got {days}")
        return tuple(sorted(days))

    _cutoff_utc = field_validator("cutoff")(_as_utc)


class ApiConfig(Section):
    """HTTP ingestion: tenants' API keys and request limits."""

    keys: SecretStr | None = Field(
        default=None, description="Comma-separated tenant:key pairs (RECSYS_API_KEYS)"
    )
    keys_file: str | None = Field(
        default=None, description="File of tenant:sha256(key) lines, e.g. a mounted Secret"
    )
    max_rows_per_request: int = Field(default=10_000, ge=1)
    max_upload_bytes: int = Field(default=1 << 30, ge=1)
    max_request_bytes: int = Field(
        default=64 << 20, ge=1, description="Body limit of the JSON/NDJSON record endpoints"
    )
    max_header_bytes: int = Field(
        default=64 << 10, ge=1024, description="Total size of a request's header names and values (431 beyond)"
    )
    body_idle_timeout_s: float = Field(
        default=15.0, gt=0, description="Longest pause while a request body arrives (408 beyond)"
    )
    body_grace_s: float = Field(
        default=10.0, ge=0, description="Time a body may take before body_min_bytes_per_s applies"
    )
    body_min_bytes_per_s: int = Field(
        default=1024, ge=0, description="Slowest average rate of a body after the grace period (0: none)"
    )
    max_body_reads_per_tenant: int = Field(
        default=32, ge=1, description="Bodies one tenant may send to a replica at once (429 beyond)"
    )


class ServeConfig(Section):
    """The ingestion service on Ray Serve: listener, replicas, overload limits, write batching."""

    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=1, le=65535)
    route_prefix: str = "/"
    num_replicas: int = Field(default=1, ge=1)
    replica_cpus: float = Field(default=0.5, gt=0)
    max_ongoing_requests: int = Field(default=64, ge=1)
    max_queued_requests: int = Field(default=256, ge=-1, description="-1 means unbounded")
    overload_status: Literal[429, 503] = 503
    retry_after_s: int = Field(default=1, ge=0)
    batch_max_requests: int = Field(default=16, ge=1, description="Requests validated and written together")
    batch_wait_s: float = Field(default=0.005, ge=0)
    spool_dir: str | None = Field(
        default=None, description="Where upload bodies are spooled; default recsys-ray-spool in the system temp dir"
    )
    upload_chunk_rows: int = Field(default=1_000_000, ge=1, description="Rows validated at a time in file uploads")
    access_log: bool = False
    health_check_period_s: float = Field(default=10.0, gt=0)
    health_check_timeout_s: float = Field(default=30.0, gt=0)
    publish_timeout_s: float = Field(default=10.0, gt=0)


class KafkaConfig(Section):
    """Kafka connection and consumer behaviour; unset bootstrap servers mean no Kafka."""

    bootstrap_servers: str | None = None
    topics: Annotated[tuple[str, ...], NoDecode] = ("recsys.interactions",)
    group_id: str = "recsys-ray"
    default_tenant: str | None = None
    topic_tenants: dict[str, str] = Field(default_factory=dict)
    topic_datasets: dict[str, str] = Field(default_factory=dict)
    events_topic: str = "recsys.uploads"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    max_batch_records: int = Field(default=50_000, ge=1)
    max_batch_seconds: float = Field(default=5.0, gt=0)
    max_unreachable_seconds: float = Field(default=120.0, gt=0)
    allowed_tenants: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="If set, messages naming another tenant_id go to the dead letters"
    )
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout_ms: int = Field(default=10_000, ge=1)
    heartbeat_interval_ms: int = Field(default=3_000, ge=1)
    max_poll_interval_ms: int = Field(default=300_000, ge=1)
    max_partition_fetch_bytes: int = Field(default=8 << 20, ge=1)
    ssl_cafile: str | None = None
    num_replicas: int = Field(default=1, ge=1, description="Consumers in the group (actors or Serve replicas)")
    replica_cpus: float = Field(default=0.25, gt=0, description="CPUs reserved per consumer actor/replica")

    @field_validator("topics", "allowed_tenants", mode="before")
    @classmethod
    def _split_topics(cls, value: Any) -> Any:
        return _string_list(value)


class ReportConfig(Section):
    """The build report (report.html): how features are sampled and binned, and the drift
    thresholds it flags (docs/report.md)."""

    sample_rows: int = Field(default=100_000, ge=1, description="Rows per split for feature distributions")
    psi_bins: int = Field(default=10, ge=2, le=100, description="Quantile bins of the reference, plus a null bin")
    psi_epsilon: float = Field(default=1e-4, gt=0, lt=0.1, description="Floor of a bin's share in the PSI")
    psi_moderate: float = Field(default=0.1, ge=0, description="PSI above this is flagged as a moderate shift")
    psi_major: float = Field(default=0.25, ge=0, description="PSI above this is flagged as a major shift")
    count_change: float = Field(default=0.2, gt=0, description="Relative change of a count that is flagged")
    item_turnover: float = Field(default=0.2, gt=0, description="Share of the previous version's items, new "
                                 "or vanished, that is flagged")
    samples_per_reason: int = Field(default=3, ge=0, le=100, description="Quarantined rows shown per reason")


class RecsysConfig(BaseSettings):
    """The configuration root: one instance per process, passed down explicitly."""

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        env_prefix="RECSYS_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        nested_model_default_partial_update=True,
    )

    storage: StorageConfig = StorageConfig()
    validation: ValidationConfig = ValidationConfig()
    build: BuildConfig = BuildConfig()
    api: ApiConfig = ApiConfig()
    kafka: KafkaConfig = KafkaConfig()
    serve: ServeConfig = ServeConfig()
    report: ReportConfig = ReportConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings)

    @model_validator(mode="after")
    def _storage_endpoint_from_env(self) -> "RecsysConfig":
        if self.storage.endpoint_url is None and os.environ.get("AWS_ENDPOINT_URL"):
            storage = self.storage.model_copy(update={"endpoint_url": os.environ["AWS_ENDPOINT_URL"]})
            object.__setattr__(self, "storage", storage)
        return self

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> "RecsysConfig":
        """Build the config from an optional YAML file, the environment and overrides.

        Overrides are nested dicts (`{"build": {"seed": 7}}`); `None` values are
        ignored so unset command-line flags keep the file's or the default value.
        """
        data: dict[str, Any] = {}
        if path is not None:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
            if not isinstance(loaded, dict):
                raise ValueError(f"config file {path} must hold a mapping at the top level")
            data = loaded
        from_env = cls().model_dump(exclude_unset=True)
        merged = _deep_merge(_deep_merge(data, from_env), _drop_none(overrides))
        return cls.model_validate(merged)


def _string_list(value: Any) -> Any:
    """Accept a list, a JSON array string or a comma-separated string."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class _AppArgsBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    config_file: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _nest_dotted_keys(cls, data: Any) -> Any:
        """`{"kafka.group_id": "g"}` (from `serve run ... kafka.group_id=g`) as `{"kafka": {"group_id": "g"}}`."""
        if not isinstance(data, dict):
            return data
        nested: dict[str, Any] = {}
        for key, value in data.items():
            section, dot, name = str(key).partition(".")
            if dot and name:
                part = nested.setdefault(section, {})
                if not isinstance(part, dict):
                    raise ValueError(f"{key!r} sets a field of {section!r}, which is not a section")
                part[name] = value
            elif isinstance(value, dict) and isinstance(nested.get(key), dict):
                nested[key] = _deep_merge(value, nested[key])
            else:
                nested[key] = value
        return nested

    def to_config(self) -> RecsysConfig:
        """The RecsysConfig: the config file, then the environment, then the sections given here."""
        sections = {name: getattr(self, name) for name in RecsysConfig.model_fields}
        return RecsysConfig.load(self.config_file, **sections)


ServeAppArgs = create_model(
    "ServeAppArgs",
    __base__=_AppArgsBase,
    __doc__="""The `args` of a Serve application built from the configuration, typed.

    Both Serve builders take it (`recsys_ray.serve.app:build_app`, the ingestion
    service, and `recsys_ray.kafka.deployment:build_app`, the consumer).
    `config_file` is a RecsysConfig YAML file; every other key is a section of
    RecsysConfig (one field each, made from `RecsysConfig.model_fields`) that
    overrides the file and the `RECSYS_*` environment, e.g.
    `storage: {root: s3://bucket/recsys}`, or a dotted key that sets one field,
    e.g. `kafka.bootstrap_servers: broker:9092`. `to_config()` builds the config.
    """,
    **{name: (dict[str, Any] | None, None) for name in RecsysConfig.model_fields},
)
