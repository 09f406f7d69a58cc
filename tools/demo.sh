#!/usr/bin/env bash
# The pipeline end to end on embedded defaults: ingest and stream workers in the
# background, a simulated fleet published over MQTT, then what reached the database.
set -euo pipefail
BIN=${BIN:-.venv/bin}
RUN=.tmiot/demo
mkdir -p "$RUN"
TMIOT_METRICS__PORT=9108 "$BIN/tmiot" ingest >"$RUN/ingest.log" 2>&1 &
ingest=$!
TMIOT_METRICS__PORT=9109 "$BIN/tmiot" stream >"$RUN/stream.log" 2>&1 &
stream=$!
trap 'kill $ingest $stream 2>/dev/null; wait 2>/dev/null' EXIT
sleep 5
"$BIN/tmiot" simulate --sensors 100 --readings 50000 --rate 0 --batch-size 100 \
  --anomalies 20 --company "Demo Co" --ground-truth "$RUN/ground_truth.csv"
echo "waiting for the stream worker to write the readings (logs in $RUN/)..."
for _ in $(seq 1 90); do
  rows=$(psql -h 127.0.0.1 -U postgres -d tmiot -Atc \
    "SELECT count(*) FROM sensor_readings r JOIN equipment_sensors s ON s.id = r.sensor_id
     JOIN customer_equipment e ON e.id = s.customer_equipment_id
     JOIN companies c ON c.id = e.company_id WHERE c.name = 'Demo Co'" 2>/dev/null || echo 0)
  echo "  sensor_readings of Demo Co: $rows"
  [ "${rows:-0}" -ge 50000 ] && break
  sleep 2
done
psql -h 127.0.0.1 -U postgres -d tmiot -c \
  "SELECT anomaly_type, count(*) FROM sensor_readings WHERE is_anomaly GROUP BY 1 ORDER BY 2 DESC"
echo "ground truth of the injected anomalies: $RUN/ground_truth.csv"
