"""Prometheus metrics of the ingest service (``tmiot_ingest_*``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["IngestMetrics"]


class IngestMetrics:
    """The ingest service's counters, gauges and histograms, on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        """Register every metric on `registry` (one per service instance)."""
        self.registry = registry
        self.messages = Counter(
            "tmiot_ingest_messages_received_total",
            "MQTT messages received, by topic kind",
            ["kind"],
            registry=registry,
        )
        self.readings = Counter(
            "tmiot_ingest_readings_produced_total",
            "Readings acknowledged by Kafka",
            registry=registry,
        )
        self.records = Counter(
            "tmiot_ingest_kafka_records_total",
            "Kafka records produced, by topic",
            ["topic"],
            registry=registry,
        )
        self.deadletters = Counter(
            "tmiot_ingest_deadletters_total",
            "Dead-lettered messages or batch items, by reason",
            ["reason"],
            registry=registry,
        )
        self.rate_limited = Counter(
            "tmiot_ingest_rejections_rate_limited_total",
            "Rejections not dead-lettered (their source was over its limit), by reason",
            ["reason"],
            registry=registry,
        )
        self.violations = Counter(
            "tmiot_ingest_tenant_violations_total",
            "Attempts to write another tenant's sensor",
            registry=registry,
        )
        self.inflight = Gauge(
            "tmiot_ingest_inflight_messages",
            "MQTT messages received and not yet acknowledged",
            registry=registry,
        )
        self.ack_latency = Histogram(
            "tmiot_ingest_ack_latency_seconds",
            "From MQTT receipt of a flush's oldest message to its acknowledgement",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.heartbeats = Counter(
            "tmiot_ingest_heartbeats_total",
            "Heartbeat rounds delivered to every raw partition (the stream's outage signal)",
            registry=registry,
        )
        self.kafka_failures = Counter(
            "tmiot_ingest_kafka_failures_total",
            "Kafka deliveries that failed after the client's retries",
            registry=registry,
        )
