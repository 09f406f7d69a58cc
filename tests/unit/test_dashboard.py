"""deploy/grafana: the dashboard loads, is well formed, and queries what the services export.

The metric names of its Prometheus queries (and of the alert rules) are checked here
against the metrics the services register, and against a live scrape of the three
running services in tests/integration/test_health.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from prometheus_client import CollectorRegistry, generate_latest

from ingest.metrics import IngestMetrics
from stream.metrics import StreamMetrics
from triggers.metrics import TriggerMetrics

DEPLOY = Path(__file__).parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "tmiot.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"

_REF = {
    "type": "object",
    "required": ["type", "uid"],
    "properties": {"type": {"type": "string"}, "uid": {"type": "string"}},
}
# The part of Grafana's dashboard model (schemaVersion 39) this dashboard relies on.
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["uid", "title", "schemaVersion", "panels", "time"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "time": {"type": "object", "required": ["from", "to"]},
        "panels": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "type", "title", "gridPos"],
                "properties": {
                    "id": {"type": "integer", "minimum": 1},
                    "type": {"enum": ["row", "timeseries", "stat", "table", "gauge"]},
                    "title": {"type": "string", "minLength": 1},
                    "gridPos": {
                        "type": "object",
                        "required": ["x", "y", "w", "h"],
                        "properties": {
                            "x": {"type": "integer", "minimum": 0, "maximum": 23},
                            "y": {"type": "integer", "minimum": 0},
                            "w": {"type": "integer", "minimum": 1, "maximum": 24},
                            "h": {"type": "integer", "minimum": 1},
                        },
                    },
                    "datasource": _REF,
                    "targets": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["refId", "datasource"],
                            "properties": {"datasource": _REF},
                            "oneOf": [{"required": ["expr"]}, {"required": ["rawSql"]}],
                        },
                    },
                },
                "if": {"properties": {"type": {"not": {"const": "row"}}}},
                "then": {"required": ["datasource", "targets"]},
            },
        },
    },
}

_METRIC = re.compile(r"\btmiot_[a-z0-9_]+")


def dashboard() -> dict[str, Any]:
    """The dashboard JSON."""
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def queried_metrics() -> set[str]:
    """Every metric name in the dashboard's Prometheus queries and in the alert rules."""
    exprs = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", []) if "expr" in t]
    exprs += [r["expr"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    return {m for e in exprs for m in _METRIC.findall(e)}


def exported(text: str) -> set[str]:
    """The sample names an exposition may carry: declared families and their samples."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_the_dashboard_is_well_formed() -> None:
    data = dashboard()
    Draft202012Validator.check_schema(SCHEMA)
    errors = list(Draft202012Validator(SCHEMA).iter_errors(data))
    assert not errors, [e.message for e in errors[:5]]
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))
    for p in data["panels"]:
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]


def test_its_datasources_are_provisioned() -> None:
    provisioned = {
        d["uid"]: d["type"] for d in yaml.safe_load(DATASOURCES.read_text())["datasources"]
    }
    for p in dashboard()["panels"]:
        for ref in [p.get("datasource")] + [t["datasource"] for t in p.get("targets", [])]:
            if ref is not None:
                assert provisioned.get(ref["uid"]) == ref["type"], (p["title"], ref)
    # The TimescaleDB panels read the hourly continuous aggregate of schema.sql.
    sql = [
        t["rawSql"] for p in dashboard()["panels"] for t in p.get("targets", []) if "rawSql" in t
    ]
    assert sql
    assert all("sensor_readings_hourly" in q for q in sql)


def test_every_queried_metric_is_one_a_service_registers() -> None:
    names: set[str] = set()
    for metrics in (IngestMetrics(CollectorRegistry()), StreamMetrics(), TriggerMetrics()):
        names |= exported(generate_latest(metrics.registry).decode())
    assert queried_metrics()
    assert queried_metrics() <= names, sorted(queried_metrics() - names)
