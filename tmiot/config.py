"""The one configuration model of the pipeline.

Read once at an entry point (the CLI) from environment variables prefixed
``TMIOT_`` (nested groups with ``__``, e.g. ``TMIOT_KAFKA__BOOTSTRAP_SERVERS``)
and an optional TOML file, then passed down as arguments. Libraries below the
entry point never read the environment.

Example:
    >>> s = Settings(kafka=KafkaSettings(bootstrap_servers="k1:9092,k2:9092"))
    >>> s.kafka.bootstrap_list
    ['k1:9092', 'k2:9092']
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from tmiot.errors import ConfigError

__all__ = [
    "SERVICE_PORTS",
    "DatabaseSettings",
    "IngestSettings",
    "KafkaSecurityProtocol",
    "KafkaSettings",
    "LogFormat",
    "LogSettings",
    "MetricsSettings",
    "MqttSettings",
    "RuntimeSettings",
    "ServicesSettings",
    "Settings",
    "SilenceSettings",
    "TlsFiles",
    "TopicSettings",
    "TriggersSettings",
    "load_settings",
]

Port = Annotated[int, Field(ge=1, le=65535)]


class _Group(BaseModel):
    """A frozen group of options; unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class TlsFiles(_Group):
    """TLS material for a client connection (all paths optional; CA alone = server auth)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            msg = "cert_file and key_file must be given together"
            raise ValueError(msg)
        return self


class MqttSettings(_Group):
    """Connection to the MQTT broker the gateways publish to."""

    host: str = "127.0.0.1"
    port: Port = 1883
    username: str | None = None
    password: SecretStr | None = None
    client_id: str = "tmiot-ingest"
    qos: Annotated[int, Field(ge=0, le=2)] = 1
    keepalive_seconds: Annotated[int, Field(ge=5, le=3600)] = 60
    tls: TlsFiles | None = None
    # Several ingest processes split the load through a shared subscription.
    share_group: str | None = "tmiot-ingest"

    @model_validator(mode="after")
    def _password_needs_username(self) -> Self:
        if self.password is not None and self.username is None:
            msg = "password is set but username is not"
            raise ValueError(msg)
        return self


class KafkaSecurityProtocol(StrEnum):
    """Kafka client security protocols (as librdkafka and aiokafka name them)."""

    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class TopicSettings(_Group):
    """Kafka topic names; every service reads them from here."""

    readings_raw: str = "sensor.readings.raw"
    readings_scored: str = "sensor.readings.scored"
    readings_deadletter: str = "sensor.readings.deadletter"
    sensor_status: str = "sensor.status"
    workorders_requested: str = "workorders.requested"
    workorders_outcomes: str = "workorders.outcomes"
    notifications_requested: str = "notifications.requested"
    pipeline_health: str = "pipeline.health"

    def names(self) -> list[str]:
        """Every topic of the pipeline."""
        return [str(v) for v in self.model_dump().values()]


class KafkaSettings(_Group):
    """Connection to Kafka (the embedded tansu broker locally, a cluster in production)."""

    bootstrap_servers: str = "127.0.0.1:19092"
    security_protocol: KafkaSecurityProtocol = KafkaSecurityProtocol.PLAINTEXT
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    tls: TlsFiles | None = None
    partitions: Annotated[int, Field(ge=1, le=10_000)] = 8
    replication_factor: Annotated[int, Field(ge=1, le=10)] = 1
    topics: TopicSettings = TopicSettings()
    # Producer tuning; our records already pack many readings, so linger stays short.
    linger_ms: Annotated[int, Field(ge=0, le=1000)] = 2
    max_request_bytes: Annotated[int, Field(ge=65_536, le=64 * 1024 * 1024)] = 4 * 1024 * 1024
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = None
    enable_idempotence: bool = False
    # Longest a consumer fetch waits for data: the floor of end-to-end latency on a
    # quiet topic (Faust hard-codes 1500 ms; our stream app passes this instead).
    fetch_max_wait_ms: Annotated[int, Field(ge=0, le=10_000)] = 50

    @property
    def bootstrap_list(self) -> list[str]:
        """The bootstrap servers as a list of ``host:port``."""
        return [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]

    @model_validator(mode="after")
    def _security_consistent(self) -> Self:
        if not self.bootstrap_list:
            msg = "bootstrap_servers is empty"
            raise ValueError(msg)
        sasl = self.security_protocol in {
            KafkaSecurityProtocol.SASL_PLAINTEXT,
            KafkaSecurityProtocol.SASL_SSL,
        }
        if sasl and (self.sasl_mechanism is None or self.sasl_username is None):
            msg = (
                f"security_protocol {self.security_protocol} needs sasl_mechanism and sasl_username"
            )
            raise ValueError(msg)
        return self


class IngestSettings(_Group):
    """Validation limits and batching of the MQTT-to-Kafka bridge."""

    max_payload_bytes: Annotated[int, Field(ge=256, le=16 * 1024 * 1024)] = 256 * 1024
    max_future_seconds: Annotated[float, Field(ge=0, le=86_400)] = 300.0
    max_age_seconds: Annotated[float, Field(gt=0)] = 7 * 86_400.0
    # Readings are packed per Kafka partition and flushed on size or time. Each flush
    # costs a Kafka send per partition: 20 ms rather than 5 gave single-reading messages
    # +10% throughput in bench-ingest, for at most 15 ms more latency.
    linger_ms: Annotated[int, Field(ge=0, le=1000)] = 20
    max_record_readings: Annotated[int, Field(ge=1, le=100_000)] = 1000
    # MQTT messages received but not yet acknowledged (Kafka has not acked them):
    # past this, ingest stops taking messages and the broker holds the rest.
    max_inflight_messages: Annotated[int, Field(ge=1, le=65_535)] = 10_000
    deadletter_payload_limit: Annotated[int, Field(ge=64, le=1024 * 1024)] = 4096
    sensor_reload_seconds: Annotated[float, Field(gt=0)] = 300.0
    audit_flush_seconds: Annotated[float, Field(gt=0)] = 10.0
    # MQTT v5 session expiry: how long the broker keeps our queue while we are away.
    session_expiry_seconds: Annotated[int, Field(ge=0)] = 7 * 86_400
    progress_log_seconds: Annotated[float, Field(gt=0)] = 10.0
    # Dead letters per second that one source (a gateway, or a tenant's single-sensor
    # topics) may cause, after a burst; beyond, its rejections are counted and dropped
    # so that its garbage cannot hold up other tenants (ingest/ratelimit.py). 0: no limit.
    rejection_rate_per_source: Annotated[float, Field(ge=0)] = 50.0
    rejection_burst_per_source: Annotated[int, Field(ge=1, le=10_000_000)] = 500
    rejection_max_sources: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000
    # While connected to MQTT, a heartbeat on every raw partition this often: the stream
    # tells our own outages (no heartbeat) from silent sensors (stream.silence).
    heartbeat_seconds: Annotated[float, Field(gt=0, le=60)] = 5.0


class DetectorSettings(_Group):
    """Online anomaly detection per sensor (stream): one configuration for every series.

    Each constant was checked by moving it alone in the leave-one-category-out NAB
    evaluation (`make nab-ablation`, bench/results/nab_ablation.md); docs/detector.md.
    """

    # Time-of-day slots of the learned daily profile (96: one per 15 minutes).
    season_bins: Annotated[int, Field(ge=1, le=1440)] = 96
    # Weight of one visit of a time-of-day slot in its profile value. A reading moves the
    # slot by season_gamma times the share of a slot's length since the previous reading,
    # so a sensor sampled every second learns its day as slowly as one sampled every 15 min.
    season_gamma: Annotated[float, Field(gt=0, le=1)] = 0.6
    # EWMA weight of the level (deseasonalised mean) per reading.
    level_alpha: Annotated[float, Field(gt=0, le=1)] = 0.1
    # EWMA weight of the residual scale (mean absolute residual).
    scale_alpha: Annotated[float, Field(gt=0, le=1)] = 0.01
    # Floor of the residual scale, as a fraction of the range seen so far.
    scale_floor: Annotated[float, Field(ge=0, le=1)] = 0.005
    # EWMA weights of the residual means tested at once: 0.25 is mostly the reading and
    # its last few (a spike, a dip, a step), 0.0625 a deviation that lasts tens of readings.
    # (A test of the reading alone, 1.0, added false alarms on spiky series in the
    # held-out evaluation: a single odd reading is judged with its neighbours.)
    mean_alphas: tuple[Annotated[float, Field(gt=0, le=1)], ...] = (0.25, 0.0625)
    # EWMA weight of the slow anchor the level is compared with (the drift test). Its
    # exceedances also keep an event open while the level is still moving.
    drift_alpha: Annotated[float, Field(gt=0, le=1)] = 0.005
    # EWMA weights of the short and long residual variance (the noise test, both ways).
    noise_short_alpha: Annotated[float, Field(gt=0, le=1)] = 0.05
    noise_long_alpha: Annotated[float, Field(gt=0, le=1)] = 0.008
    # Each test's statistic is calibrated against the sensor's own past: readings above
    # its running (1 - tail_quantile) quantile fit a generalised Pareto tail (peaks over
    # threshold), remembered over about tail_window readings.
    tail_quantile: Annotated[float, Field(gt=0, lt=0.5)] = 0.01
    tail_window: Annotated[float, Field(gt=1)] = 7_000.0
    # Evidence (-log tail probability, nats) that maps to score 0.5: e / (e + evidence_half).
    evidence_half: Annotated[float, Field(gt=0)] = 8.0
    # Evidence is judged per unit of time: a sensor sampled every t < this many seconds
    # (t from its readings' own timestamps) needs log(reference / t) nats more, so that it
    # alerts no more often per hour than one sampled at this pace: a 10 s sensor met a
    # reading as rare as 1 in 10,000 six times as often, and its false noise alerts made
    # most of a fleet's false work orders (#21, bench/results/false_alarms.md). 0: per reading.
    # NAB series are sampled every 5 minutes or slower: it does not change their scores.
    reference_interval_seconds: Annotated[float, Field(ge=0)] = 60.0
    # Readings learned before any score is given (NAB allows 15 % of a file).
    warmup_readings: Annotated[int, Field(ge=2, le=100_000)] = 30
    # Score from which a reading is an anomaly and opens an event (chosen by
    # leave-one-category-out on NAB: every held-out fold chose it on the other four).
    anomaly_threshold: Annotated[float, Field(gt=0, le=1)] = 0.36
    # One event, one alert: after an anomaly, scores read 0 for up to this many readings ...
    holdoff_readings: Annotated[int, Field(ge=0, le=100_000)] = 200
    # ... or until quiet_readings readings in a row have no test above its tail's threshold.
    quiet_readings: Annotated[int, Field(ge=1, le=100_000)] = 20


class SilenceSettings(_Group):
    """When a sensor counts as missing, and when the pipeline itself is down (stream)."""

    # Missing: no delivery for more than missing_factor sampling intervals, and more than
    # gap_factor times the sensor's usual delivery gap (gateway batches, store-and-forward).
    missing_factor: Annotated[float, Field(ge=1, le=1000)] = 3.0
    gap_factor: Annotated[float, Field(ge=1, le=100)] = 2.5
    # Allowance of a sensor whose delivery pattern is not known yet (new, restored from a
    # checkpoint, registered and never heard from): store-and-forward gateways upload up
    # to every 15 minutes, so a shorter allowance would call their sensors missing.
    learning_seconds: Annotated[float, Field(ge=0, le=86_400)] = 2400.0
    # No ingest heartbeat on a partition for this long (ingest sends one every
    # ingest.heartbeat_seconds): the pipeline is down, no sensor is judged meanwhile.
    outage_seconds: Annotated[float, Field(gt=0, le=3600)] = 20.0


class StreamSettings(_Group):
    """The stream workers: Faust app, batching, state checkpoints, database sink."""

    app_id: str = "tmiot-stream"  # Faust app id: the consumer group
    # Records handed to the scoring body at once, or what arrived within buffer_seconds.
    # Each buffer costs a few database and Kafka round trips whatever its size, so a
    # quiet fleet's small records (a few readings each) need many per buffer.
    buffer_records: Annotated[int, Field(ge=1, le=100_000)] = 2000
    buffer_seconds: Annotated[float, Field(gt=0, le=60)] = 0.1
    # A buffer is scored and written in chunks of about this many readings, one database
    # transaction each: a chunk is inserted (the database's core) while the next one is
    # scored (this process's core).
    write_readings: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    # Save each partition's changed detector states this often (one partition at a time,
    # in the background); a restart replays at most this much of a partition.
    checkpoint_seconds: Annotated[float, Field(gt=0)] = 60.0
    # last_reading_at, status back to active and battery levels are written this often
    # (each sensor seen since the last flush is one row update: at 100,000 sensors this
    # is most of the database's work after the inserts, so not too often).
    sensor_flush_seconds: Annotated[float, Field(gt=0)] = 60.0
    # Kafka offsets of processed records are committed this often (Faust).
    commit_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0
    # The silence (missing) check and bookkeeping timer.
    tick_seconds: Annotated[float, Field(gt=0, le=3600)] = 2.0
    # A worker that stops heartbeating loses its partitions after this long (kill -9).
    session_timeout_seconds: Annotated[float, Field(ge=3, le=300)] = 30.0
    # Sensor settings (sampling interval, alert thresholds, status) are reloaded this
    # often: a sensor back from maintenance is scored again within it, no restart.
    sensor_refresh_seconds: Annotated[float, Field(gt=0, le=86_400)] = 30.0
    detector: DetectorSettings = DetectorSettings()
    silence: SilenceSettings = SilenceSettings()


class TriggersSettings(_Group):
    """The trigger service: consumer group, freshness of the trigger list, event time."""

    group_id: str = "tmiot-triggers"  # Kafka consumer group of the trigger processes
    # Triggers are reloaded this often (a change applies without restart) ...
    refresh_seconds: Annotated[float, Field(gt=0, le=3600)] = 5.0
    # ... and the sensors they watch this often, or at once when the triggers name new ones.
    sensor_refresh_seconds: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    # Readings up to this much older than the newest of their (trigger, sensor) still
    # count in the right window; older ones are dropped (counted).
    lateness_seconds: Annotated[float, Field(ge=0, le=86_400)] = 60.0
    # An incident whose readings are older than this (a backfill, a replay) is recorded
    # as historical: no work order, no notification.
    backfill_horizon_seconds: Annotated[float, Field(gt=0)] = 3600.0
    max_poll_records: Annotated[int, Field(ge=1, le=100_000)] = 500
    # Evaluation states are checkpointed this often; a restart replays at most this much.
    # The changed states are snapshotted while the consumer waits (about 5 us each), and
    # each is one upsert: every second, a busy fleet's upserts took a third of the
    # database's time at 10,000 readings/s (bench/e2e); every 5 s, 25,000 changed
    # states pause the consumer about 0.14 s.
    checkpoint_seconds: Annotated[float, Field(gt=0)] = 5.0
    # ... or less often: the next checkpoint waits until the last write's duration is at
    # most this share of the time since it began. A window holds `lateness_seconds` of
    # readings, so a fleet of fast sensors (1,000 sensors at 40 readings/s each: 2,400
    # points a state) makes every checkpoint rewrite tens of MB of jsonb, seconds of the
    # database's time every 5 s (bench/e2e).
    checkpoint_duty: Annotated[float, Field(gt=0, le=1)] = 0.1
    # Time-driven checks (sensor silent for longer than a pattern's duration).
    tick_seconds: Annotated[float, Field(gt=0, le=3600)] = 5.0
    # A silence opens its incident no earlier than this after the stream reported it,
    # so that the sensors of a gateway that went offline are seen together (one incident).
    settle_seconds: Annotated[float, Field(ge=0, le=3600)] = 60.0
    # An incident on a sensor of equipment (or behind a gateway) with a work order opened
    # within this long and not yet closed by the FSM attaches to it: one visit, one order.
    attach_seconds: Annotated[float, Field(ge=0, le=30 * 86_400)] = 86_400.0
    session_timeout_seconds: Annotated[float, Field(ge=3, le=300)] = 10.0


class DatabaseSettings(_Group):
    """PostgreSQL / TimescaleDB connection."""

    # A libpq URL or conninfo string; a password belongs in `password`, not here.
    url: str = "postgresql://postgres@127.0.0.1:5432/tmiot"
    password: SecretStr | None = None
    pool_min_size: Annotated[int, Field(ge=0, le=100)] = 1
    pool_max_size: Annotated[int, Field(ge=1, le=200)] = 8
    connect_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 10.0

    @model_validator(mode="after")
    def _pool_sizes(self) -> Self:
        if self.pool_min_size > self.pool_max_size:
            msg = "pool_min_size is larger than pool_max_size"
            raise ValueError(msg)
        return self


# Each service's default metrics port: distinct, so that all three run on one host.
SERVICE_PORTS: Final = {"ingest": 9108, "stream": 9109, "triggers": 9110}


class MetricsSettings(_Group):
    """Prometheus endpoint of each service, with its /healthz and /readyz (tmiot.health)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port | None = None  # None: the service's own (SERVICE_PORTS)
    # Readiness probes (database, Kafka) and the liveness ping, this often.
    probe_seconds: Annotated[float, Field(gt=0, le=300)] = 5.0
    # /healthz fails when the service's event loop has not answered for this long.
    stall_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0

    def port_for(self, service: str) -> int:
        """The port `service` serves on: the configured one, else its default."""
        return self.port if self.port is not None else SERVICE_PORTS[service]


class LogFormat(StrEnum):
    """Log renderers: JSON lines for production, colourless console for people."""

    JSON = "json"
    CONSOLE = "console"


class LogSettings(_Group):
    """Structured logging."""

    format: LogFormat = LogFormat.CONSOLE
    level: str = "INFO"

    @model_validator(mode="after")
    def _known_level(self) -> Self:
        if self.level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            msg = f"unknown log level {self.level!r}"
            raise ValueError(msg)
        return self


class RuntimeSettings(_Group):
    """Process-level tuning of the long-running services."""

    # The cyclic garbage collector's generation-0 threshold (CPython's default: 700).
    # A service holding thousands of in-flight messages pays for every collection
    # walking them; 10,000 cut ingest's CPU per message by a third in bench-ingest.
    # 0 leaves the interpreter's defaults alone.
    gc_threshold: Annotated[int, Field(ge=0, le=1_000_000)] = 10_000


class ServicesSettings(_Group):
    """The embedded local services (`tmiot services up`) for development and tests."""

    run_dir: Path = Path(".tmiot")
    start_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0


class Settings(BaseSettings):
    """Everything the three services and the CLI can be configured with."""

    model_config = SettingsConfigDict(
        env_prefix="TMIOT_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )
    # Set by load_settings; a class variable so that pydantic does not treat it as a field.
    _toml_file: ClassVar[Path | None] = None

    mqtt: MqttSettings = MqttSettings()
    kafka: KafkaSettings = KafkaSettings()
    ingest: IngestSettings = IngestSettings()
    stream: StreamSettings = StreamSettings()
    triggers: TriggersSettings = TriggersSettings()
    database: DatabaseSettings = DatabaseSettings()
    metrics: MetricsSettings = MetricsSettings()
    log: LogSettings = LogSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    services: ServicesSettings = ServicesSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order of precedence: arguments, environment, then the TOML file."""
        del dotenv_settings, file_secret_settings
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls._toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._toml_file))
        return tuple(sources)


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        setting = ".".join(str(p) for p in err["loc"]) or "(settings)"
        env = "TMIOT_" + "__".join(str(p) for p in err["loc"]).upper()
        lines.append(f"{setting} (env {env}): {err['msg']}")
    return "; ".join(lines)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:  # noqa: ANN401 - pydantic takes any field value
    """Read the settings from the environment and an optional TOML file.

    Args:
        config_file: a TOML file with the same nested keys (``[kafka]``,
            ``bootstrap_servers = ...``); the environment overrides it.
        **overrides: field values that win over both.

    Raises:
        ConfigError: a setting is invalid or the file is unreadable; the message
            names every offending setting and its environment variable.
    """
    if config_file is not None and not config_file.is_file():
        msg = f"config file {config_file} does not exist"
        raise ConfigError(msg, setting="config_file")
    # pydantic-settings builds sources per class, so the file is passed via a
    # throwaway subclass rather than global state.
    cls: type[Settings] = type("Settings", (Settings,), {"_toml_file": config_file})
    try:
        return cls(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc), setting=_first_setting(exc)) from exc
    except (OSError, ValueError) as exc:  # TOML syntax errors are ValueErrors
        msg = f"cannot read config file {config_file}: {exc}"
        raise ConfigError(msg, setting="config_file") from exc


def _first_setting(exc: ValidationError) -> str:
    errors = exc.errors()
    return ".".join(str(p) for p in errors[0]["loc"]) if errors else ""
