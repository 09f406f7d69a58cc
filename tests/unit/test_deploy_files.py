"""deploy/'s compose file and Kubernetes manifests against the configuration model.

No Docker engine or cluster here: these tests read the files and check that every
tmiot setting they give exists in `tmiot.config.Settings` and validates, that hosts,
ports and topic settings agree between the services, and that no secret is written in.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from tests.fix_services import repo_root
from tmiot.config import Settings, load_settings

DEPLOY = repo_root() / "deploy"
SECRETS = ("TMIOT_DATABASE__PASSWORD", "TMIOT_KAFKA__SASL_PASSWORD", "TMIOT_MQTT__PASSWORD")
TMIOT_SERVICES = ("db-init", "ingest", "stream", "triggers")


def _field_path_exists(variable: str) -> bool:
    """Does TMIOT_<GROUP>__<KEY>[__...] name a field of the settings model?"""
    model: type[BaseModel] = Settings
    parts = variable.removeprefix("TMIOT_").lower().split("__")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        if i == len(parts) - 1:
            return True
        annotation = field.annotation
        inner = [a for a in getattr(annotation, "__args__", (annotation,)) if a is not type(None)]
        nested = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if nested is None:
            return False
        model = nested
    return False


def _settings_from(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, toml: Path | None
) -> Settings:
    for key in list(os.environ):
        if key.startswith("TMIOT_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings(toml)


# --- docker compose ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return loaded


def _substitute(value: object) -> str:
    """Compose's ${VAR:?message} with a stand-in value (the test has no .env)."""
    return re.sub(r"\$\{(\w+)(:\?[^}]*)?\}", lambda m: f"secret-of-{m.group(1)}", str(value))


def test_every_tmiot_service_setting_exists_and_validates(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in TMIOT_SERVICES:
        service = compose["services"][name]
        env = {k: _substitute(v) for k, v in service["environment"].items()}
        unknown = [k for k in env if k.startswith("TMIOT_") and not _field_path_exists(k)]
        assert unknown == [], f"{name}: not settings {unknown}"
        settings = _settings_from(env, monkeypatch, None)
        assert settings.metrics.host == "0.0.0.0"  # noqa: S104 - scraped from other containers
        assert service["image"] == "tmiot:latest"


def test_compose_hosts_and_ports_agree(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose["services"]
    env = {k: _substitute(v) for k, v in services["stream"]["environment"].items()}
    settings = _settings_from(env, monkeypatch, None)
    kafka_env = services["kafka"]["environment"]
    assert settings.kafka.bootstrap_list == [
        kafka_env["KAFKA_ADVERTISED_LISTENERS"].removeprefix("PLAINTEXT://")
    ]
    assert settings.kafka.replication_factor <= 1  # one broker here
    assert int(kafka_env["KAFKA_NUM_PARTITIONS"]) == settings.kafka.partitions
    assert "timescaledb:5432/" in settings.database.url
    db_env = services["timescaledb"]["environment"]
    assert settings.database.url.endswith("/" + db_env["POSTGRES_DB"])
    assert settings.database.url.startswith(f"postgresql://{db_env['POSTGRES_USER']}@")
    # MQTT: the broker's listener, with TLS files where the compose mounts them.
    assert settings.mqtt.host == "mosquitto"
    mosquitto_conf = (DEPLOY / "compose" / "mosquitto.conf").read_text()
    assert f"listener {settings.mqtt.port}\n" in mosquitto_conf
    assert "allow_anonymous false" in mosquitto_conf
    assert settings.mqtt.tls is not None
    assert settings.mqtt.tls.cert_file is not None
    assert str(settings.mqtt.tls.cert_file).startswith("/etc/tmiot/tls/")
    # Prometheus scrapes every service on its metrics port.
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: job.get("static_configs", [{}])[0].get("targets")
        or [f"{n}:{d['port']}" for d in job["dns_sd_configs"] for n in d["names"]]
        for job in prometheus["scrape_configs"]
    }
    for name in ("ingest", "stream", "triggers"):
        assert targets[f"tmiot-{name}"] == [f"{name}:{settings.metrics.port_for(name)}"]
    # Each service's healthcheck asks its /readyz through `tmiot probe`.
    for name in ("ingest", "stream", "triggers"):
        assert services[name]["healthcheck"]["test"] == ["CMD", "tmiot", "probe", name]


def test_compose_scales_stream_and_pins_the_ingest_session(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["stream"]["deploy"]["replicas"] > 1
    assert services["ingest"]["environment"]["TMIOT_MQTT__CLIENT_ID"]
    assert services["ingest"]["command"] == ["ingest"]
    assert services["db-init"]["command"] == ["db", "init"]
    assert "db-init" not in services["db-init"]["depends_on"]
    for name in ("ingest", "stream", "triggers"):
        condition = services[name]["depends_on"]["db-init"]["condition"]
        assert condition == "service_completed_successfully"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_no_secret_is_written_into_compose(compose: dict[str, Any]) -> None:
    for name in TMIOT_SERVICES:
        env = compose["services"][name]["environment"]
        for key in SECRETS:
            if key in env:
                assert str(env[key]).startswith("${"), f"{name}: {key} is written in"
    password = compose["services"]["timescaledb"]["environment"]["POSTGRES_PASSWORD"]
    assert str(password).startswith("${")


# --- Kubernetes ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            found[f"{doc['kind']}/{doc.get('metadata', {}).get('name', path.stem)}"] = doc
    return found


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    on_disk = {
        p.name
        for p in (DEPLOY / "k8s").glob("*.yaml")
        if p.name not in {"kustomization.yaml", "secret.example.yaml"}
    }
    assert set(kustomization["resources"]) == on_disk


def _configmap_settings(
    manifests: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    secret: str,
) -> tuple[Settings, Path]:
    """The ConfigMap's tmiot.toml as a file, loaded with every secret set to `secret`."""
    toml = tmp_path / "tmiot.toml"
    toml.write_text(manifests["ConfigMap/tmiot-config"]["data"]["tmiot.toml"])
    return _settings_from(dict.fromkeys(SECRETS, secret), monkeypatch, toml), toml


def test_the_configmap_settings_load_with_the_model(
    manifests: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings, toml = _configmap_settings(manifests, monkeypatch, tmp_path, "from-the-secret")
    assert settings.kafka.security_protocol.value == "SASL_SSL"
    assert settings.kafka.replication_factor == len(settings.kafka.bootstrap_list)
    assert settings.kafka.sasl_password is not None
    assert "from-the-secret" not in toml.read_text()


def _containers(manifests: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for key, doc in manifests.items():
        if doc["kind"] in {"Deployment", "StatefulSet", "Job"}:
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            out[key] = container
        elif doc["kind"] == "CronJob":
            (container,) = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
            out[key] = container
    return out


def test_every_workload_reads_the_configmap_and_its_secrets(
    manifests: dict[str, dict[str, Any]],
) -> None:
    config = manifests["ConfigMap/tmiot-config"]
    containers = _containers(manifests)
    assert set(containers) == {
        "Job/tmiot-db-init",
        "StatefulSet/tmiot-ingest",
        "Deployment/tmiot-stream",
        "Deployment/tmiot-triggers",
        "CronJob/tmiot-kpis",
    }
    assert containers["CronJob/tmiot-kpis"]["args"][-1] == "kpis"
    for key, container in containers.items():
        doc = manifests[key]
        args = container["args"]
        assert args[:2] == ["--config", "/etc/tmiot/config/tmiot.toml"], key
        pod = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
        volumes = {v["name"]: v for v in pod["template"]["spec"]["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert (
            volumes[mounts["/etc/tmiot/config"]]["configMap"]["name"] == config["metadata"]["name"]
        )
        env = {e["name"]: e for e in container["env"]}
        assert all(_field_path_exists(name) for name in env), key
        for secret in SECRETS:
            assert "secretKeyRef" in env[secret]["valueFrom"], f"{key}: {secret}"
        assert container["image"] == "tmiot:latest"


def test_workload_roles_ports_and_scale(
    manifests: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings, _ = _configmap_settings(manifests, monkeypatch, tmp_path, "x")
    containers = _containers(manifests)
    for name in ("ingest", "stream", "triggers"):
        key = next(k for k in containers if k.endswith(f"/tmiot-{name}"))
        container = containers[key]
        assert container["args"][-1] == name
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == settings.metrics.port_for(name)
        annotations = manifests[key]["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(settings.metrics.port_for(name))
        # Probes on the metrics port, and resources requested and bounded.
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        resources = container["resources"]
        assert set(resources) == {"requests", "limits"}
        assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    assert manifests["Deployment/tmiot-stream"]["spec"]["replicas"] > 1
    assert containers["Job/tmiot-db-init"]["args"][-2:] == ["db", "init"]
    # Ingest: a StatefulSet whose pods take their (stable) name as MQTT client id.
    ingest = manifests["StatefulSet/tmiot-ingest"]
    assert manifests[f"Service/{ingest['spec']['serviceName']}"]["spec"]["clusterIP"] == "None"
    env = {e["name"]: e for e in containers["StatefulSet/tmiot-ingest"]["env"]}
    assert env["TMIOT_MQTT__CLIENT_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
