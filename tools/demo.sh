#!/usr/bin/env bash
# The pipeline end to end on embedded defaults: ingest, stream and triggers in the
# background, a simulated fleet of a fresh company published over MQTT, then what
# reached the database and which incidents and work orders the triggers raised.
set -euo pipefail
BIN=${BIN:-.venv/bin}
RUN=.tmiot/demo
COMPANY="Demo Co $(date -u +%Y%m%d-%H%M%S)"
PSQL=(psql -h 127.0.0.1 -U postgres -d tmiot -v ON_ERROR_STOP=1)
mkdir -p "$RUN"
TMIOT_METRICS__PORT=9108 "$BIN/tmiot" ingest >"$RUN/ingest.log" 2>&1 &
ingest=$!
TMIOT_METRICS__PORT=9109 "$BIN/tmiot" stream >"$RUN/stream.log" 2>&1 &
stream=$!
TMIOT_METRICS__PORT=9110 "$BIN/tmiot" triggers >"$RUN/triggers.log" 2>&1 &
triggers=$!
trap 'kill $ingest $stream $triggers 2>/dev/null; wait 2>/dev/null' EXIT
sleep 5

echo "== registering the fleet of \"$COMPANY\" and its fleet-wide triggers"
"$BIN/tmiot" simulate --sensors 100 --readings 100 --rate 0 --batch-size 100 \
  --anomalies 0 --company "$COMPANY" >/dev/null
"${PSQL[@]}" -q -v company="$COMPANY" <<'SQL'
INSERT INTO automated_service_triggers (company_id, trigger_number, trigger_name, condition_type,
    trigger_conditions, auto_create_work_order, priority_level, notify_technician,
    notification_template)
SELECT c.id, v.num || '-' || left(c.id::text, 8), v.name, 'anomaly_detected', v.cond::jsonb,
       true, 'high', true, '{{ sensor_number }} ({{ sensor_type }}): {{ summary }}'
FROM companies AS c,
     (VALUES ('DEMO-SPIKE', 'Spikes', '{"min_score": 0.5, "anomaly_types": ["spike", "drop"]}'),
             ('DEMO-DRIFT', 'Drifts', '{"min_score": 0.5, "anomaly_types": ["drift"]}'))
     AS v(num, name, cond)
WHERE c.name = :'company';
SQL
sleep 6  # the trigger service reloads its list every 5 s

echo "== publishing 50,000 readings with labelled anomalies"
"$BIN/tmiot" simulate --no-register --sensors 100 --readings 50000 --rate 0 --batch-size 100 \
  --anomalies 20 --company "$COMPANY" --ground-truth "$RUN/ground_truth.csv"
echo "waiting for the stream worker to write the readings (logs in $RUN/)..."
rows=0
for _ in $(seq 1 90); do
  rows=$("${PSQL[@]}" -Atc "SELECT count(*) FROM sensor_readings r
     JOIN equipment_sensors s ON s.id = r.sensor_id
     JOIN customer_equipment e ON e.id = s.customer_equipment_id
     JOIN companies c ON c.id = e.company_id WHERE c.name = '$COMPANY'" 2>/dev/null || echo 0)
  echo "  sensor_readings of $COMPANY: $rows"
  [ "${rows:-0}" -ge 50000 ] && break
  sleep 2
done
sleep 5  # the triggers' last poll
echo "== anomalies scored"
"${PSQL[@]}" -c "SELECT r.anomaly_type, count(*) FROM sensor_readings r
  JOIN equipment_sensors s ON s.id = r.sensor_id JOIN customer_equipment e ON e.id = s.customer_equipment_id
  JOIN companies c ON c.id = e.company_id
  WHERE r.is_anomaly AND c.name = '$COMPANY' GROUP BY 1 ORDER BY 2 DESC"
echo "== incidents (historical: older than the backfill horizon, recorded without a work order)"
"${PSQL[@]}" -c "SELECT t.trigger_number, i.historical, count(DISTINCT i.id) AS incidents,
  count(o.id) FILTER (WHERE o.topic = 'workorders.requested') AS work_orders,
  count(o.id) FILTER (WHERE o.sent_at IS NOT NULL) AS events_sent
  FROM trigger_incidents i JOIN automated_service_triggers t ON t.id = i.trigger_id
  JOIN companies c ON c.id = i.company_id LEFT JOIN trigger_outbox o ON o.incident_id = i.id
  WHERE c.name = '$COMPANY' GROUP BY 1, 2 ORDER BY 1, 2"
echo "ground truth of the injected anomalies: $RUN/ground_truth.csv"
