from __future__ import annotations

import os

import pytest

from tests.fix_services import repo_root
from tmiot.config import KafkaSecurityProtocol, LogFormat, load_settings


def test_production_example_loads_with_the_configuration_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in list(os.environ):
        if key.startswith("TMIOT_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("TMIOT_KAFKA__SASL_PASSWORD", "from-the-secret-store")
    s = load_settings(repo_root() / "deploy" / "tmiot.production.toml")
    assert s.kafka.security_protocol is KafkaSecurityProtocol.SASL_SSL
    assert len(s.kafka.bootstrap_list) == 3
    assert s.mqtt.tls is not None
    assert s.mqtt.tls.cert_file is not None
    assert s.log.format is LogFormat.JSON
    assert s.kafka.sasl_password is not None
    assert (
        "from-the-secret-store"
        not in (repo_root() / "deploy" / "tmiot.production.toml").read_text()
    )
