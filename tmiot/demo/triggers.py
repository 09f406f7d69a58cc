"""The triggers a careful customer sets for a fleet: the demo's, and the work-order bench's.

Each requests a work order, so each must be one a dispatcher would act on:

* ``DEMO-BAND``: a value outside the sensor's own alert band (``alert_threshold_min`` /
  ``_max``, what the customer registered as abnormal). Spikes, drops and drifts of
  equipment cross it; a healthy sensor never does.
* ``DEMO-ERRATIC``: the detector found ``noise`` that lasts (erratic readings: a loose
  contact, a failing bearing), the fault the band cannot see: two noise alerts within
  an hour, which the detector gives when the noise outlasts its first alert by 10
  readings and 5 minutes. Only that type: for spikes, drops and drifts the band is the
  customer's own, sharper word; a single flag of any type sent technicians to healthy
  sensors, most on fast ones (a sensor read every 10 s has 8,640 chances a day).
* ``DEMO-SILENT``: a sensor that stopped delivering for 15 minutes past its usual
  pattern (the stream's silence judgement; a short dropout is not a truck roll).
* ``DEMO-WEAR``: the air-quality sensors' trend reaching the band within 72 hours, fitted
  on at least 1,000 readings (most of a day at one a minute) with r² 0.8: on a few
  hours, a morning's rise reads as wear.

Each is ``(number, name, condition type, conditions, sensor type or None for all)``.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["FLEET_TRIGGERS"]

FLEET_TRIGGERS: Final[tuple[tuple[str, str, str, dict[str, Any], str | None], ...]] = (
    ("DEMO-BAND", "Out of band", "threshold_exceeded", {}, None),
    (
        "DEMO-ERRATIC",
        "Erratic readings",
        "anomaly_detected",
        {"anomaly_types": ["noise"], "count": 2, "window_seconds": 3600},
        None,
    ),
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
            "min_readings": 1000,
            "min_r2": 0.8,
        },
        "air_quality",
    ),
)
