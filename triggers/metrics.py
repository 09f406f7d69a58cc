"""Prometheus metrics of the trigger service (``tmiot_triggers_*``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["TriggerMetrics"]


class TriggerMetrics:
    """The trigger service's counters, gauges and histograms, on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """Register every metric on `registry` (a fresh one by default)."""
        self.registry = registry = registry or CollectorRegistry()
        self.readings = Counter(
            "tmiot_triggers_readings_total", "Scored readings consumed", registry=registry
        )
        self.lag = Gauge(
            "tmiot_triggers_lag_seconds",
            "How far behind ingest the triggers are: now minus ingest's receipt of the newest"
            " scored reading consumed, when it was consumed",
            registry=registry,
        )
        self.evaluations = Counter(
            "tmiot_triggers_evaluations_total",
            "(trigger, reading) evaluations",
            registry=registry,
        )
        self.incidents = Counter(
            "tmiot_triggers_incidents_total",
            "Incidents opened, live or historical (a backfill's)",
            ["kind"],
            registry=registry,
        )
        self.cleared = Counter(
            "tmiot_triggers_incidents_cleared_total",
            "Incidents closed, by reason",
            ["reason"],
            registry=registry,
        )
        self.events = Counter(
            "tmiot_triggers_events_sent_total",
            "Events acknowledged by Kafka, by topic",
            ["topic"],
            registry=registry,
        )
        self.outcomes = Counter(
            "tmiot_triggers_outcomes_total",
            "Work-order outcomes applied",
            ["outcome"],
            registry=registry,
        )
        self.deadletters = Counter(
            "tmiot_triggers_deadletters_total",
            "Records dead-lettered, by reason",
            ["reason"],
            registry=registry,
        )
        self.active = Gauge(
            "tmiot_triggers_active", "Active, valid triggers loaded", registry=registry
        )
        self.rejected = Gauge(
            "tmiot_triggers_rejected", "Active triggers skipped as invalid", registry=registry
        )
        self.latency = Histogram(
            "tmiot_triggers_event_latency_seconds",
            "From ingest receiving the reading to its work-order event acknowledged",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=registry,
        )
        self.checkpoint_seconds = Histogram(
            "tmiot_triggers_checkpoint_seconds",
            "Time to write one checkpoint (changed states and their offsets)",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=registry,
        )
        self.poll_seconds = Histogram(
            "tmiot_triggers_poll_seconds",
            "Time to evaluate and commit one poll of records",
            registry=registry,
        )
