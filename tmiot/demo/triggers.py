"""The triggers a careful customer sets for a fleet: the demo's, and the work-order bench's.

Each requests a work order, so each must be one a dispatcher would act on:

* ``DEMO-BAND``: a value outside the sensor's own alert band (``alert_threshold_min`` /
  ``_max``, what the customer registered as abnormal). Spikes, drops and drifts of
  equipment cross it; a healthy sensor never does.
* ``DEMO-ERRATIC``: the detector found ``noise`` (erratic readings: a loose contact, a
  failing bearing), the fault the band cannot see. Only that type: for spikes, drops
  and drifts the band is the customer's own, sharper word, and a detector flag of
  those types alone sent technicians to healthy sensors (bench/results/workorders.md).
* ``DEMO-SILENT``: a sensor that stopped delivering for 15 minutes past its usual
  pattern (the stream's silence judgement; a short dropout is not a truck roll).
* ``DEMO-WEAR``: the air-quality sensors' trend reaching the band within 72 hours.

Each is ``(number, name, condition type, conditions, sensor type or None for all)``.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["FLEET_TRIGGERS"]

FLEET_TRIGGERS: Final[tuple[tuple[str, str, str, dict[str, Any], str | None], ...]] = (
    ("DEMO-BAND", "Out of band", "threshold_exceeded", {}, None),
    ("DEMO-ERRATIC", "Erratic readings", "anomaly_detected", {"anomaly_types": ["noise"]}, None),
    (
        "DEMO-SILENT",
        "Sensor silent",
        "pattern_detected",
        {"pattern": "missing", "for_seconds": 900},
        None,
    ),
    (
        "DEMO-WEAR",
        "Wear forecast",
        "maintenance_due",
        {
            "mode": "forecast",
            "horizon_hours": 72,
            "window_seconds": 86400,
            "min_readings": 20,
            "min_r2": 0.5,
        },
        "air_quality",
    ),
)
