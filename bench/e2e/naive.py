"""The naive bridge: what most hand-made MQTT-to-Postgres bridges do, as the baseline.

A subscriber that INSERTs each reading into ``sensor_readings`` as it arrives, one
statement and one commit per reading, no Kafka, no scoring, no batching. It is given
what makes it correct, so the comparison is fair: QoS 1, the sensor resolved by its
device id in the same statement, and ``ON CONFLICT DO NOTHING`` (a redelivered
reading is not a duplicate).

``python -m bench.e2e.naive --port PORT --database-url URL``; it prints ``ready``
once subscribed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import aiomqtt
import psycopg

_INSERT = (
    "INSERT INTO sensor_readings (sensor_id, reading_timestamp, value, processed)"
    " SELECT s.id, to_timestamp(%s / 1000.0), %s, false"
    " FROM equipment_sensors AS s WHERE s.device_id = %s"
    " ON CONFLICT DO NOTHING"
)


async def bridge(port: int, url: str) -> None:
    """Subscribe and insert every reading, forever."""
    async with (
        await psycopg.AsyncConnection.connect(url, autocommit=True) as conn,
        aiomqtt.Client("127.0.0.1", port, identifier="naive-bridge") as client,
    ):
        await client.subscribe("tenants/+/sensors/+/readings", qos=1)
        await client.subscribe("tenants/+/gateways/+/readings", qos=1)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        async for message in client.messages:
            body = json.loads(bytes(message.payload))
            parts = str(message.topic).split("/")
            if parts[2] == "sensors":
                await conn.execute(_INSERT, (body["timestamp"], body["value"], parts[3]))
                continue
            for item in body["readings"]:
                await conn.execute(_INSERT, (item["timestamp"], item["value"], item["device_id"]))


def main() -> None:
    """Run the bridge until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    args = parser.parse_args()
    asyncio.run(bridge(args.port, args.database_url))


if __name__ == "__main__":
    main()
