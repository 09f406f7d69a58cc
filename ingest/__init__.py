"""ingest: bridges MQTT gateways into Kafka, validated and keyed by sensor (issue #3)."""
