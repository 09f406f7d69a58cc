"""Prometheus metrics of the stream workers (``tmiot_stream_*``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["StreamMetrics"]


class StreamMetrics:
    """The stream worker's counters, gauges and histograms, on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """Register every metric on `registry` (a fresh one by default)."""
        self.registry = registry = registry or CollectorRegistry()
        self.readings = Counter(
            "tmiot_stream_readings_scored_total", "Readings scored", registry=registry
        )
        self.rows = Counter(
            "tmiot_stream_rows_inserted_total",
            "sensor_readings rows inserted (replays insert none)",
            registry=registry,
        )
        self.anomalies = Counter(
            "tmiot_stream_anomalies_total", "Anomalies, by type", ["type"], registry=registry
        )
        self.deadletters = Counter(
            "tmiot_stream_deadletters_total",
            "Records or rows dead-lettered, by reason",
            ["reason"],
            registry=registry,
        )
        self.poison = Counter(
            "tmiot_stream_poison_records_total", "Undecodable records skipped", registry=registry
        )
        self.checkpointed = Counter(
            "tmiot_stream_states_checkpointed_total",
            "Detector states saved",
            registry=registry,
        )
        self.states_refused = Counter(
            "tmiot_stream_states_refused_total",
            "Checkpointed detector states refused (another version): the sensor starts afresh",
            registry=registry,
        )
        self.batch_readings = Histogram(
            "tmiot_stream_record_readings",
            "Readings per raw record",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 5000),
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "tmiot_stream_batch_seconds",
            "Time to score, write and publish one buffer of records (includes DB latency)",
            registry=registry,
        )
        self.sensors = Gauge(
            "tmiot_stream_sensors", "Sensors with a model in this worker", registry=registry
        )
        self.outages = Counter(
            "tmiot_stream_pipeline_outages_total",
            "Pipeline outages seen (no ingest heartbeat): no sensor was judged missing meanwhile",
            ["cause"],
            registry=registry,
        )
        self.db_write_seconds = Histogram(
            "tmiot_stream_db_write_seconds",
            "Time to insert one chunk of scored readings in one transaction",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
        self.lag = Gauge(
            "tmiot_stream_lag_seconds",
            "How far behind ingest the stream is: now minus ingest's receipt of the newest"
            " reading scored, when it was scored",
            registry=registry,
        )
        self.checkpoint_age = Gauge(
            "tmiot_stream_checkpoint_age_seconds",
            "Seconds since this worker last saved a checkpoint (states and offset) of a partition",
            registry=registry,
        )
        self.pipeline_down = Gauge(
            "tmiot_stream_pipeline_down",
            "1 while an outage of the pipeline lasts (no ingest heartbeat on held partitions)",
            registry=registry,
        )
