"""One settings model, every client: aiokafka options and Faust's credentials agree."""

from __future__ import annotations

import ssl

import pytest
from faust.auth import SASLCredentials, SSLCredentials
from pydantic import SecretStr, ValidationError

from tmiot.config import KafkaSecurityProtocol, KafkaSettings
from tmiot.kafka import client_options, faust_credentials


def test_plaintext_has_no_credentials() -> None:
    settings = KafkaSettings()
    assert faust_credentials(settings) is None
    assert client_options(settings)["security_protocol"] == "PLAINTEXT"
    assert client_options(settings)["ssl_context"] is None


def test_sasl_ssl_reaches_faust_with_the_mechanism_user_password_and_tls() -> None:
    settings = KafkaSettings(
        security_protocol=KafkaSecurityProtocol.SASL_SSL,
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="pipeline",
        sasl_password=SecretStr("s3cret"),
    )
    credentials = faust_credentials(settings)
    assert isinstance(credentials, SASLCredentials)
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert (credentials.username, credentials.password) == ("pipeline", "s3cret")
    assert isinstance(credentials.ssl_context, ssl.SSLContext)
    assert credentials.protocol.value == "SASL_SSL"
    options = client_options(settings)
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_password"] == "s3cret"  # noqa: S105 - test data
    assert isinstance(options["ssl_context"], ssl.SSLContext)


def test_sasl_plaintext_has_no_tls() -> None:
    settings = KafkaSettings(
        security_protocol=KafkaSecurityProtocol.SASL_PLAINTEXT,
        sasl_mechanism="PLAIN",
        sasl_username="pipeline",
    )
    credentials = faust_credentials(settings)
    assert isinstance(credentials, SASLCredentials)
    assert credentials.ssl_context is None
    assert credentials.protocol.value == "SASL_PLAINTEXT"


def test_ssl_alone_reaches_faust_as_a_tls_context() -> None:
    credentials = faust_credentials(KafkaSettings(security_protocol=KafkaSecurityProtocol.SSL))
    assert isinstance(credentials, SSLCredentials)
    assert credentials.context.verify_mode == ssl.CERT_REQUIRED


def test_an_unknown_mechanism_is_refused_at_load() -> None:
    with pytest.raises(ValidationError, match="sasl_mechanism"):
        KafkaSettings(
            security_protocol=KafkaSecurityProtocol.SASL_SSL,
            sasl_mechanism="SCRAM-SHA-1",
            sasl_username="pipeline",
        )
