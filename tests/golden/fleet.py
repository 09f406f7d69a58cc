"""The golden fleet: fixed ids, one sensor of each seed type, triggers, and its recording.

``python -m tests.golden.fleet`` (``make golden-recording``) rewrites the recording
``fleet.tmrec.gz``: eight hours of the simulator's signals with one anomaly of each
type, packed per partition as ingest packs them. The ids are fixed (uuid5), so a
recording made once replays into any database that :func:`register` filled.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Final

import psycopg

from tmiot.config import DatabaseSettings
from tmiot.db import conninfo
from tmiot.simulate.fleet import Fleet, SimSensor
from tmiot.simulate.recording import record_fleet
from tmiot.simulate.signals import PROFILES, schedule_anomalies

HERE: Final = Path(__file__).parent
RECORDING: Final = HERE / "fleet.tmrec.gz"
INJECTIONS: Final = HERE / "injections.json"
PARTITIONS: Final = 4
SEED: Final = 4242
START: Final = dt.datetime(2026, 11, 2, 6, 0, tzinfo=dt.UTC)
END: Final = START + dt.timedelta(hours=8)
_NS: Final = uuid.UUID("6a1f6e52-4b0e-4c55-9d5e-0c1e2a7b9f31")

COMPANY: Final = str(uuid.uuid5(_NS, "company"))
CUSTOMER: Final = str(uuid.uuid5(_NS, "customer"))
EQUIPMENT: Final = str(uuid.uuid5(_NS, "equipment"))
TYPES: Final = list(PROFILES)
SENSORS: Final = {t.value: str(uuid.uuid5(_NS, f"sensor-{t.value}")) for t in TYPES}
# (trigger id, number, sensor or None for the fleet, condition type, conditions)
TRIGGERS: Final = (
    (str(uuid.uuid5(_NS, "t-anomaly")), "G-ANOMALY", None, "anomaly_detected", {"min_score": 0.5}),
    (
        str(uuid.uuid5(_NS, "t-hot")),
        "G-HOT",
        SENSORS["temperature"],
        "threshold_exceeded",
        {"above": PROFILES[TYPES[0]].alert_threshold_max},
    ),
)


def register(db: DatabaseSettings) -> None:
    """Insert the golden company, equipment, sensors and triggers (fixed ids)."""
    with psycopg.connect(conninfo(db), autocommit=True) as conn:
        conn.execute("INSERT INTO companies (id, name) VALUES (%s, 'Golden Co')", (COMPANY,))
        conn.execute(
            "INSERT INTO customers (id, company_id, name) VALUES (%s, %s, 'Golden customer')",
            (CUSTOMER, COMPANY),
        )
        conn.execute(
            "INSERT INTO customer_equipment (id, company_id, customer_id, name)"
            " VALUES (%s, %s, %s, 'Golden plant')",
            (EQUIPMENT, COMPANY, CUSTOMER),
        )
        for kind in TYPES:
            p = PROFILES[kind]
            conn.execute(
                "INSERT INTO equipment_sensors (id, customer_equipment_id, sensor_type,"
                " sensor_number, device_id, sampling_interval_seconds, alert_threshold_min,"
                " alert_threshold_max, unit_of_measure)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    SENSORS[kind.value],
                    EQUIPMENT,
                    kind.value,
                    f"GOLD-{kind.value}",
                    f"gold-{kind.value}",
                    p.sampling_interval_seconds,
                    p.alert_threshold_min,
                    p.alert_threshold_max,
                    p.unit_of_measure,
                ),
            )
        for trigger_id, number, sensor, condition_type, conditions in TRIGGERS:
            conn.execute(
                "INSERT INTO automated_service_triggers (id, company_id, trigger_number,"
                " trigger_name, sensor_id, condition_type, trigger_conditions,"
                " auto_create_work_order) VALUES (%s, %s, %s, %s, %s, %s, %s, true)",
                (
                    trigger_id,
                    COMPANY,
                    number,
                    number,
                    sensor,
                    condition_type,
                    json.dumps(conditions),
                ),
            )


def golden_fleet() -> Fleet:
    """The golden sensors as a simulator fleet (bank index = position in TYPES)."""
    return Fleet(
        COMPANY,
        SEED,
        tuple(
            SimSensor(i, SENSORS[t.value], f"gold-{t.value}", f"GOLD-{t.value}", t, PROFILES[t])
            for i, t in enumerate(TYPES)
        ),
    )


def write_recording(path: Path = RECORDING) -> int:
    """Simulate the fleet and write its raw records; how many readings."""
    fleet = golden_fleet()
    injections = schedule_anomalies(fleet.bank(START), seed=SEED, start=START, end=END, count=5)
    readings = record_fleet(
        path, fleet, start=START, end=END, injections=injections, partitions=PARTITIONS
    )
    INJECTIONS.write_text(
        json.dumps(
            [
                {
                    "sensor": TYPES[a.sensor].value,
                    "type": a.anomaly_type.value,
                    "start_ms": a.start_ms,
                    "end_ms": a.end_ms,
                }
                for a in injections
            ],
            indent=1,
        )
        + "\n"
    )
    return readings


if __name__ == "__main__":
    print(f"{write_recording()} readings -> {RECORDING}")
