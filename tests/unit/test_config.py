from __future__ import annotations

from pathlib import Path

import pytest

from tmiot.config import KafkaSecurityProtocol, LogFormat, Settings, TopicSettings, load_settings
from tmiot.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("TMIOT_"):
            monkeypatch.delenv(key)


def test_defaults_point_at_the_local_services() -> None:
    s = load_settings()
    assert s.mqtt.port == 1883
    assert s.mqtt.qos == 1
    assert s.kafka.bootstrap_list == ["127.0.0.1:19092"]
    assert s.kafka.topics.readings_raw == "sensor.readings.raw"
    assert s.log.format is LogFormat.CONSOLE


def test_environment_sets_nested_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMIOT_KAFKA__BOOTSTRAP_SERVERS", "k1:9092, k2:9092")
    monkeypatch.setenv("TMIOT_KAFKA__TOPICS__READINGS_RAW", "raw.v2")
    monkeypatch.setenv("TMIOT_MQTT__TLS__CA_FILE", "/etc/ca.pem")
    monkeypatch.setenv("TMIOT_LOG__FORMAT", "json")
    s = load_settings()
    assert s.kafka.bootstrap_list == ["k1:9092", "k2:9092"]
    assert s.kafka.topics.readings_raw == "raw.v2"
    assert s.kafka.topics.readings_scored == "sensor.readings.scored"
    assert s.mqtt.tls is not None
    assert s.mqtt.tls.ca_file == Path("/etc/ca.pem")
    assert s.log.format is LogFormat.JSON


def test_toml_file_is_read_and_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "tmiot.toml"
    cfg.write_text(
        '[mqtt]\nhost = "broker.example"\nport = 8883\n'
        '[database]\nurl = "postgresql://app@db.example/tmiot"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("TMIOT_MQTT__PORT", "1884")
    s = load_settings(cfg)
    assert s.mqtt.host == "broker.example"
    assert s.mqtt.port == 1884
    assert s.database.url == "postgresql://app@db.example/tmiot"


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("TMIOT_MQTT__PORT", "70000", "mqtt.port (env TMIOT_MQTT__PORT)"),
        ("TMIOT_MQTT__QOS", "3", "mqtt.qos (env TMIOT_MQTT__QOS)"),
        ("TMIOT_KAFKA__PARTITIONS", "zero", "kafka.partitions (env TMIOT_KAFKA__PARTITIONS)"),
        ("TMIOT_LOG__LEVEL", "LOUD", "log (env TMIOT_LOG)"),
        ("TMIOT_KAFKA__SECURITY_PROTOCOL", "SASL_SSL", "kafka (env TMIOT_KAFKA)"),
        ("TMIOT_KAFKA__BOOTSTRAP_SERVERS", " , ", "kafka (env TMIOT_KAFKA)"),
        ("TMIOT_MQTT__TLS__CERT_FILE", "/c.pem", "mqtt.tls (env TMIOT_MQTT__TLS)"),
        ("TMIOT_DATABASE__POOL_MIN_SIZE", "50", "database (env TMIOT_DATABASE)"),
        ("TMIOT_METRICS__PORTT", "1", "metrics.portt"),
    ],
)
def test_invalid_settings_fail_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert named in str(info.value)


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_broken_toml_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[mqtt\nport = 1", encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(cfg)


def test_secrets_do_not_leak_into_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMIOT_MQTT__USERNAME", "gw1")
    monkeypatch.setenv("TMIOT_MQTT__PASSWORD", "hunter2-secret")
    monkeypatch.setenv("TMIOT_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("TMIOT_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("TMIOT_KAFKA__SASL_USERNAME", "svc")
    monkeypatch.setenv("TMIOT_KAFKA__SASL_PASSWORD", "kafka-secret")
    s = load_settings()
    assert s.kafka.security_protocol is KafkaSecurityProtocol.SASL_SSL
    text = repr(s) + str(s) + s.model_dump_json()
    assert "hunter2-secret" not in text
    assert "kafka-secret" not in text
    assert s.mqtt.password is not None
    assert s.mqtt.password.get_secret_value() == "hunter2-secret"


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(ValueError, match="frozen"):
        s.mqtt.port = 1  # type: ignore[misc]


def test_topic_names_are_every_topic_setting() -> None:
    topics = TopicSettings(readings_raw="raw.x")
    assert topics.names()[0] == "raw.x"
    assert len(topics.names()) == len(TopicSettings.model_fields) == len(set(topics.names()))
