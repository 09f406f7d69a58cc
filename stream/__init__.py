"""stream: online anomaly scoring per sensor and the TimescaleDB sink (issue #4)."""
