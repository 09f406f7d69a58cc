"""Fleet simulator: realistic sensor signals with labelled anomalies, published over MQTT.

- :mod:`~tmiot.simulate.signals`: profiles per sensor type, deterministic signals,
  anomaly injection and scheduling (pure numpy);
- :mod:`~tmiot.simulate.fleet`: registers the fleet in the database;
- :mod:`~tmiot.simulate.publisher`: publishes readings on the contract's topics;
- :mod:`~tmiot.simulate.ground_truth`: the injected anomalies as CSV;
- :mod:`~tmiot.simulate.command`: the `tmiot simulate` command.
"""

from tmiot.simulate.command import configure_parser, run
from tmiot.simulate.fleet import Fleet, SimSensor, device_id, load_fleet, register_fleet
from tmiot.simulate.ground_truth import (
    GroundTruth,
    ground_truth,
    read_ground_truth,
    write_ground_truth,
)
from tmiot.simulate.publisher import (
    FleetPublisher,
    PublishError,
    PublishOptions,
    PublishResult,
    SimWindow,
    publish_fleet,
    simulated_window,
)
from tmiot.simulate.signals import (
    PROFILES,
    AnomalyType,
    Injection,
    SensorType,
    SignalBank,
    SignalProfile,
    inject,
    schedule_anomalies,
    series,
)

__all__ = [
    "PROFILES",
    "AnomalyType",
    "Fleet",
    "FleetPublisher",
    "GroundTruth",
    "Injection",
    "PublishError",
    "PublishOptions",
    "PublishResult",
    "SensorType",
    "SignalBank",
    "SignalProfile",
    "SimSensor",
    "SimWindow",
    "configure_parser",
    "device_id",
    "ground_truth",
    "inject",
    "load_fleet",
    "publish_fleet",
    "read_ground_truth",
    "register_fleet",
    "run",
    "schedule_anomalies",
    "series",
    "simulated_window",
    "write_ground_truth",
]
