-- TradesMate Pro "Phase 4" schema for the IoT pipeline (tmiot).
--
-- Idempotent: `tmiot db init` applies it at every start. It runs on plain
-- PostgreSQL 15+ and, where the `timescaledb` extension can be created, turns
-- `sensor_readings` into a compressed hypertable with retention and an hourly
-- continuous aggregate. Code never needs to know which path was taken: the
-- same tables, columns and the `sensor_readings_hourly` relation exist on both.
--
-- Statements are separated by a line holding only `-- ;;` so that clients
-- with a small message limit (TimescaleDB-in-WASM) can send them one by one.

-- ---------------------------------------------------------------------------
-- Extensions
-- ---------------------------------------------------------------------------
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS timescaledb;
        EXCEPTION WHEN OTHERS THEN
            -- Installed but not preloaded (shared_preload_libraries): run plain.
            RAISE NOTICE 'timescaledb not usable here (%), using plain PostgreSQL', SQLERRM;
        END;
    END IF;
END
$$;
-- ;;

-- ---------------------------------------------------------------------------
-- Enums, named after the seed's columns. New labels are added, never removed.
-- ---------------------------------------------------------------------------
DO $$
DECLARE
    e record;
    label text;
BEGIN
    FOR e IN
        SELECT * FROM (VALUES
            ('optimization_type', ARRAY['distance', 'time', 'cost', 'customer_priority', 'ai_hybrid']),
            ('optimization_status', ARRAY['pending', 'calculating', 'completed', 'failed', 'applied']),
            ('model_algorithm_type', ARRAY['regression', 'classification', 'neural_network', 'ensemble']),
            ('severity_level', ARRAY['low', 'medium', 'high', 'critical']),
            ('recommended_action', ARRAY['monitor', 'schedule_maintenance', 'immediate_service', 'replace']),
            ('prediction_status', ARRAY['active', 'scheduled', 'completed', 'false_positive']),
            ('sensor_type', ARRAY['temperature', 'pressure', 'vibration', 'flow', 'electrical', 'humidity', 'air_quality']),
            ('communication_protocol', ARRAY['wifi', 'bluetooth', 'zigbee', 'lora', 'cellular', 'ethernet']),
            ('sensor_status', ARRAY['active', 'inactive', 'maintenance', 'error', 'offline']),
            ('anomaly_type', ARRAY['spike', 'drop', 'drift', 'noise', 'missing']),
            ('trigger_condition_type', ARRAY['threshold_exceeded', 'pattern_detected', 'anomaly_detected', 'maintenance_due']),
            ('priority_level', ARRAY['low', 'normal', 'high', 'urgent']),
            ('kpi_update_frequency', ARRAY['hourly', 'daily', 'weekly', 'monthly']),
            ('kpi_unit_type', ARRAY['number', 'percentage', 'currency', 'ratio']),
            ('measurement_period', ARRAY['hour', 'day', 'week', 'month', 'quarter', 'year']),
            ('trend_direction', ARRAY['up', 'down', 'stable']),
            ('performance_status', ARRAY['excellent', 'good', 'warning', 'poor']),
            ('audit_event_type', ARRAY['login_attempt', 'permission_change', 'data_access', 'data_export', 'configuration_change', 'security_violation']),
            ('audit_severity', ARRAY['info', 'warning', 'error', 'critical']),
            ('compliance_status', ARRAY['compliant', 'non_compliant', 'partial', 'unknown', 'not_applicable'])
        ) AS v(name, labels)
    LOOP
        IF to_regtype(e.name) IS NULL THEN
            EXECUTE format(
                'CREATE TYPE %I AS ENUM (%s)',
                e.name,
                (SELECT string_agg(quote_literal(l), ', ') FROM unnest(e.labels) AS l)
            );
        ELSE
            FOREACH label IN ARRAY e.labels LOOP
                IF NOT EXISTS (
                    SELECT 1 FROM pg_enum
                    WHERE enumtypid = to_regtype(e.name) AND enumlabel = label
                ) THEN
                    EXECUTE format('ALTER TYPE %I ADD VALUE %L', e.name, label);
                END IF;
            END LOOP;
        END IF;
    END LOOP;
END
$$;
-- ;;

-- ---------------------------------------------------------------------------
-- Human-readable numbers (SENS-001, AST-2025-001, ...), generated on insert.
-- A counter row per (prefix, year) keeps numbers short and gap-free per year;
-- its row lock serialises concurrent inserts of the same kind, which these
-- low-rate tables can afford.
-- ---------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS number_counters (
    prefix      text   NOT NULL,
    period      int    NOT NULL,
    last_value  bigint NOT NULL,
    PRIMARY KEY (prefix, period)
);
-- ;;

CREATE OR REPLACE FUNCTION tmiot_next_number(p_prefix text, yearly boolean)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    y int := CASE WHEN yearly THEN extract(year FROM now())::int ELSE 0 END;
    n bigint;
BEGIN
    INSERT INTO number_counters AS c (prefix, period, last_value)
    VALUES (p_prefix, y, 1)
    ON CONFLICT ON CONSTRAINT number_counters_pkey
    DO UPDATE SET last_value = c.last_value + 1
    RETURNING c.last_value INTO n;
    RETURN p_prefix || '-'
        || CASE WHEN yearly THEN y::text || '-' ELSE '' END
        || lpad(n::text, greatest(3, length(n::text)), '0');
END
$$;
-- ;;

-- Trigger arguments: column name, prefix, yearly ('true'/'false').
CREATE OR REPLACE FUNCTION tmiot_assign_number()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF to_jsonb(NEW) ->> TG_ARGV[0] IS NULL THEN
        NEW := jsonb_populate_record(
            NEW,
            jsonb_build_object(TG_ARGV[0], tmiot_next_number(TG_ARGV[1], TG_ARGV[2]::boolean))
        );
    END IF;
    RETURN NEW;
END
$$;
-- ;;

CREATE OR REPLACE FUNCTION tmiot_touch_updated_at()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
-- ;;

-- ---------------------------------------------------------------------------
-- Minimal versions of the tables Phase 4 references.
-- ---------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS companies (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- ;;

CREATE TABLE IF NOT EXISTS users (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id  uuid REFERENCES companies (id) ON DELETE CASCADE,
    email       text NOT NULL UNIQUE,
    full_name   text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- ;;

CREATE TABLE IF NOT EXISTS employees (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id  uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    user_id     uuid REFERENCES users (id) ON DELETE SET NULL,
    full_name   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- ;;

CREATE TABLE IF NOT EXISTS customers (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id  uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    name        text NOT NULL,
    email       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- ;;

CREATE TABLE IF NOT EXISTS customer_equipment (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id          uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    customer_id         uuid NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    name                text NOT NULL,
    equipment_type      text,
    manufacturer        text,
    model               text,
    serial_number       text,
    install_date        date,
    last_service_date   date,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
-- ;;

CREATE TABLE IF NOT EXISTS job_templates (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id          uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    name                text NOT NULL,
    description         text,
    default_priority    priority_level NOT NULL DEFAULT 'normal',
    estimated_minutes   int CHECK (estimated_minutes IS NULL OR estimated_minutes > 0),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
-- ;;

CREATE TABLE IF NOT EXISTS work_orders (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id              uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    customer_id             uuid REFERENCES customers (id) ON DELETE SET NULL,
    customer_equipment_id   uuid REFERENCES customer_equipment (id) ON DELETE SET NULL,
    job_template_id         uuid REFERENCES job_templates (id) ON DELETE SET NULL,
    work_order_number       text UNIQUE,
    title                   text NOT NULL,
    description             text,
    status                  text NOT NULL DEFAULT 'requested',
    priority                priority_level NOT NULL DEFAULT 'normal',
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
-- ;;

-- ---------------------------------------------------------------------------
-- Advanced scheduling and AI
-- ---------------------------------------------------------------------------
-- technician_ids / work_order_ids are arrays: PostgreSQL has no foreign keys
-- on array elements; services validate them against employees / work_orders.
CREATE TABLE IF NOT EXISTS route_optimizations (
    id                          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id                  uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    optimization_number         text NOT NULL UNIQUE,
    optimization_date           date NOT NULL DEFAULT current_date,
    technician_ids              uuid[] NOT NULL DEFAULT '{}',
    work_order_ids              uuid[] NOT NULL DEFAULT '{}',
    optimization_type           optimization_type NOT NULL DEFAULT 'ai_hybrid',
    max_drive_time_hours        numeric(5, 2) CHECK (max_drive_time_hours IS NULL OR max_drive_time_hours >= 0),
    max_jobs_per_tech           int CHECK (max_jobs_per_tech IS NULL OR max_jobs_per_tech > 0),
    break_duration_minutes      int CHECK (break_duration_minutes IS NULL OR break_duration_minutes >= 0),
    use_traffic_data            boolean NOT NULL DEFAULT true,
    use_weather_data            boolean NOT NULL DEFAULT false,
    use_historical_patterns     boolean NOT NULL DEFAULT true,
    learning_model_version      text,
    total_drive_time_hours      numeric,
    total_drive_distance_miles  numeric,
    optimization_score          numeric(5, 2),
    route_data                  jsonb,
    status                      optimization_status NOT NULL DEFAULT 'pending',
    applied_at                  timestamptz,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);
-- ;;

CREATE TABLE IF NOT EXISTS dynamic_scheduling_rules (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id              uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    rule_number             text NOT NULL UNIQUE,
    rule_name               text NOT NULL,
    description             text,
    trigger_conditions      jsonb NOT NULL DEFAULT '{}',
    actions                 jsonb NOT NULL DEFAULT '[]',
    priority                int NOT NULL DEFAULT 100,
    times_triggered         int NOT NULL DEFAULT 0 CHECK (times_triggered >= 0),
    success_rate_percent    numeric(5, 2) CHECK (success_rate_percent IS NULL OR success_rate_percent BETWEEN 0 AND 100),
    last_triggered_at       timestamptz,
    is_active               boolean NOT NULL DEFAULT true,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
-- ;;

-- ---------------------------------------------------------------------------
-- Predictive analytics
-- ---------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS predictive_maintenance_models (
    id                          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id                  uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    model_number                text NOT NULL UNIQUE,
    model_name                  text NOT NULL,
    equipment_type              text,
    algorithm_type              model_algorithm_type NOT NULL,
    input_features              jsonb,
    model_parameters            jsonb,
    accuracy_percent            numeric CHECK (accuracy_percent IS NULL OR accuracy_percent BETWEEN 0 AND 100),
    precision_percent           numeric CHECK (precision_percent IS NULL OR precision_percent BETWEEN 0 AND 100),
    recall_percent              numeric CHECK (recall_percent IS NULL OR recall_percent BETWEEN 0 AND 100),
    f1_score                    numeric CHECK (f1_score IS NULL OR f1_score BETWEEN 0 AND 1),
    training_data_size          int CHECK (training_data_size IS NULL OR training_data_size >= 0),
    last_trained_at             timestamptz,
    training_duration_minutes   int CHECK (training_duration_minutes IS NULL OR training_duration_minutes >= 0),
    version                     text,
    is_active                   boolean NOT NULL DEFAULT true,
    deployed_at                 timestamptz,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);
-- ;;

CREATE TABLE IF NOT EXISTS maintenance_predictions (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    customer_equipment_id   uuid NOT NULL REFERENCES customer_equipment (id) ON DELETE CASCADE,
    model_id                uuid REFERENCES predictive_maintenance_models (id) ON DELETE SET NULL,
    prediction_number       text NOT NULL UNIQUE,
    predicted_failure_date  date,
    confidence_score        numeric(5, 2) CHECK (confidence_score IS NULL OR confidence_score BETWEEN 0 AND 100),
    failure_type            text,
    severity                severity_level NOT NULL DEFAULT 'medium',
    recommended_action      recommended_action NOT NULL DEFAULT 'monitor',
    estimated_cost          numeric(12, 2) CHECK (estimated_cost IS NULL OR estimated_cost >= 0),
    actual_failure_date     date,
    prediction_accuracy     numeric(5, 2) CHECK (prediction_accuracy IS NULL OR prediction_accuracy BETWEEN 0 AND 100),
    status                  prediction_status NOT NULL DEFAULT 'active',
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
-- ;;

CREATE TABLE IF NOT EXISTS customer_churn_predictions (
    id                          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    customer_id                 uuid NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    prediction_number           text NOT NULL UNIQUE,
    churn_probability           numeric(5, 2) CHECK (churn_probability IS NULL OR churn_probability BETWEEN 0 AND 100),
    risk_level                  severity_level NOT NULL DEFAULT 'low',
    predicted_churn_date        date,
    primary_risk_factors        jsonb,
    recommended_actions         jsonb,
    estimated_retention_cost    numeric,
    potential_revenue_loss      numeric,
    intervention_applied        boolean NOT NULL DEFAULT false,
    intervention_type           text,
    intervention_date           date,
    actual_churn_date           date,
    retention_success           boolean,
    model_version               text,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);
-- ;;

-- ---------------------------------------------------------------------------
-- IoT and equipment monitoring
-- ---------------------------------------------------------------------------
-- The owning company is customer_equipment.company_id: ingest checks a
-- gateway's tenant against it.
CREATE TABLE IF NOT EXISTS equipment_sensors (
    id                          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    customer_equipment_id       uuid NOT NULL REFERENCES customer_equipment (id) ON DELETE CASCADE,
    sensor_number               text NOT NULL UNIQUE,
    sensor_type                 sensor_type NOT NULL,
    manufacturer                text,
    model                       text,
    serial_number               text,
    communication_protocol      communication_protocol,
    device_id                   text,
    sampling_interval_seconds   int NOT NULL DEFAULT 300 CHECK (sampling_interval_seconds > 0),
    alert_threshold_min         numeric,
    alert_threshold_max         numeric,
    unit_of_measure             text,
    status                      sensor_status NOT NULL DEFAULT 'active',
    last_reading_at             timestamptz,
    battery_level_percent       int CHECK (battery_level_percent IS NULL OR battery_level_percent BETWEEN 0 AND 100),
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT equipment_sensors_threshold_order CHECK (
        alert_threshold_min IS NULL OR alert_threshold_max IS NULL
        OR alert_threshold_min <= alert_threshold_max
    )
);
-- ;;

-- The seed's `id uuid PK` stays as a column, but the primary key is
-- (sensor_id, reading_timestamp): a hypertable's unique keys must hold the
-- time column, and this key makes a replayed reading a no-op
-- (INSERT ... ON CONFLICT DO NOTHING).
CREATE TABLE IF NOT EXISTS sensor_readings (
    id                  uuid NOT NULL DEFAULT gen_random_uuid(),
    sensor_id           uuid NOT NULL REFERENCES equipment_sensors (id) ON DELETE CASCADE,
    reading_timestamp   timestamptz NOT NULL,
    value               numeric(15, 6) NOT NULL,
    unit                text,
    quality_score       numeric(3, 2) CHECK (quality_score IS NULL OR quality_score BETWEEN 0 AND 1),
    ambient_temperature numeric,
    ambient_humidity    numeric CHECK (ambient_humidity IS NULL OR ambient_humidity BETWEEN 0 AND 100),
    weather_conditions  text,
    is_anomaly          boolean NOT NULL DEFAULT false,
    anomaly_score       numeric(5, 4) CHECK (anomaly_score IS NULL OR anomaly_score BETWEEN 0 AND 1),
    anomaly_type        anomaly_type,
    processed           boolean NOT NULL DEFAULT false,
    processed_at        timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sensor_id, reading_timestamp)
);
-- ;;

CREATE TABLE IF NOT EXISTS automated_service_triggers (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id              uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    trigger_number          text NOT NULL UNIQUE,
    trigger_name            text NOT NULL,
    description             text,
    sensor_id               uuid REFERENCES equipment_sensors (id) ON DELETE CASCADE,
    condition_type          trigger_condition_type NOT NULL,
    trigger_conditions      jsonb NOT NULL DEFAULT '{}',
    auto_create_work_order  boolean NOT NULL DEFAULT false,
    work_order_template_id  uuid REFERENCES job_templates (id) ON DELETE SET NULL,
    priority_level          priority_level NOT NULL DEFAULT 'normal',
    notify_customer         boolean NOT NULL DEFAULT false,
    notify_technician       boolean NOT NULL DEFAULT false,
    notification_template   text,
    times_triggered         int NOT NULL DEFAULT 0 CHECK (times_triggered >= 0),
    false_positive_rate     numeric(5, 2) CHECK (false_positive_rate IS NULL OR false_positive_rate BETWEEN 0 AND 100),
    is_active               boolean NOT NULL DEFAULT true,
    last_triggered_at       timestamptz,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
-- ;;

-- ---------------------------------------------------------------------------
-- Advanced BI and KPIs
-- ---------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS kpi_definitions (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id          uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    kpi_code            text NOT NULL UNIQUE,
    kpi_name            text NOT NULL,
    description         text,
    calculation_method  text,
    data_sources        text[] NOT NULL DEFAULT '{}',
    update_frequency    kpi_update_frequency NOT NULL DEFAULT 'daily',
    unit_type           kpi_unit_type NOT NULL DEFAULT 'number',
    decimal_places      int NOT NULL DEFAULT 2 CHECK (decimal_places BETWEEN 0 AND 10),
    target_value        numeric,
    benchmark_value     numeric,
    green_threshold     numeric,
    yellow_threshold    numeric,
    red_threshold       numeric,
    is_active           boolean NOT NULL DEFAULT true,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
-- ;;

CREATE TABLE IF NOT EXISTS kpi_values (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    kpi_definition_id       uuid NOT NULL REFERENCES kpi_definitions (id) ON DELETE CASCADE,
    measurement_date        date NOT NULL,
    measurement_period      measurement_period NOT NULL DEFAULT 'day',
    current_value           numeric,
    previous_value          numeric,
    target_value            numeric,
    variance_from_target    numeric,
    variance_percent        numeric,
    trend_direction         trend_direction,
    performance_status      performance_status,
    data_quality_score      numeric(3, 2) CHECK (data_quality_score IS NULL OR data_quality_score BETWEEN 0 AND 1),
    calculated_at           timestamptz NOT NULL DEFAULT now(),
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
-- ;;
-- One value per KPI and period: `tmiot kpis` recomputes a day by upserting on it.
CREATE UNIQUE INDEX IF NOT EXISTS kpi_values_one_per_period
    ON kpi_values (kpi_definition_id, measurement_date, measurement_period);
-- ;;

-- Pipeline bookkeeping (not in the Phase 4 seed): the stream workers' model
-- checkpoints. A partition's row holds the offset its sensors' states are
-- current to; a restarted worker loads them and replays the partition from there.
CREATE TABLE IF NOT EXISTS stream_checkpoints (
    consumer_group  text NOT NULL,
    topic           text NOT NULL,
    kafka_partition int NOT NULL CHECK (kafka_partition >= 0),
    next_offset     bigint NOT NULL CHECK (next_offset >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, kafka_partition)
);
-- ;;
CREATE TABLE IF NOT EXISTS stream_model_states (
    consumer_group  text NOT NULL,
    sensor_id       uuid NOT NULL REFERENCES equipment_sensors (id) ON DELETE CASCADE,
    kafka_partition int NOT NULL CHECK (kafka_partition >= 0),
    state           bytea NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, sensor_id)
);
-- ;;
CREATE INDEX IF NOT EXISTS stream_model_states_partition_idx
    ON stream_model_states (consumer_group, kafka_partition);
-- ;;

-- Pipeline bookkeeping of the trigger service. trigger_offsets and
-- trigger_states are its checkpoint: each (trigger, sensor) evaluation state
-- with the offset of the scored partition it is current to; a process that
-- takes a partition loads them and replays from there. An incident's id is
-- its stable key (also the work order's idempotency key), so a replay that
-- reopens it inserts nothing. trigger_outbox holds the events of committed
-- incidents until Kafka has acknowledged them.
CREATE TABLE IF NOT EXISTS trigger_offsets (
    consumer_group  text NOT NULL,
    topic           text NOT NULL,
    kafka_partition int NOT NULL CHECK (kafka_partition >= 0),
    next_offset     bigint NOT NULL CHECK (next_offset >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, kafka_partition)
);
-- ;;
CREATE TABLE IF NOT EXISTS trigger_states (
    consumer_group  text NOT NULL,
    trigger_id      uuid NOT NULL REFERENCES automated_service_triggers (id) ON DELETE CASCADE,
    sensor_id       uuid NOT NULL REFERENCES equipment_sensors (id) ON DELETE CASCADE,
    kafka_partition int NOT NULL CHECK (kafka_partition >= 0),
    state           jsonb NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, trigger_id, sensor_id)
);
-- ;;
CREATE INDEX IF NOT EXISTS trigger_states_partition_idx
    ON trigger_states (consumer_group, kafka_partition);
-- ;;
CREATE TABLE IF NOT EXISTS trigger_incidents (
    id              uuid PRIMARY KEY,
    company_id      uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    trigger_id      uuid NOT NULL REFERENCES automated_service_triggers (id) ON DELETE CASCADE,
    sensor_id       uuid NOT NULL REFERENCES equipment_sensors (id) ON DELETE CASCADE,
    opened_at       timestamptz NOT NULL,
    cleared_at      timestamptz,
    clear_reason    text,
    historical      boolean NOT NULL DEFAULT false,
    summary         text NOT NULL,
    evidence        jsonb NOT NULL DEFAULT '[]',
    prediction_id   uuid REFERENCES maintenance_predictions (id) ON DELETE SET NULL,
    outcome         text CHECK (outcome IS NULL OR outcome IN ('resolved', 'false_positive')),
    outcome_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
-- ;;
CREATE INDEX IF NOT EXISTS trigger_incidents_trigger_idx
    ON trigger_incidents (trigger_id, sensor_id, opened_at);
-- ;;
CREATE INDEX IF NOT EXISTS trigger_incidents_outcome_idx
    ON trigger_incidents (outcome_at) WHERE outcome IS NOT NULL;
-- ;;
-- One work order per fault: an incident requests a work order, or joins the open one
-- of its equipment or offline gateway (triggers/grouping.py). `id` is the work order's
-- idempotency key (the key of the incident that requested it).
CREATE TABLE IF NOT EXISTS trigger_work_orders (
    id              uuid PRIMARY KEY,
    company_id      uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    subject_kind    text NOT NULL CHECK (subject_kind IN ('equipment', 'gateway')),
    subject_id      text NOT NULL,
    opened_at       timestamptz NOT NULL,
    closed_at       timestamptz,
    outcome         text CHECK (outcome IS NULL OR outcome IN ('resolved', 'false_positive'))
);
-- ;;
CREATE INDEX IF NOT EXISTS trigger_work_orders_open_idx
    ON trigger_work_orders (company_id, subject_kind, subject_id, opened_at)
    WHERE closed_at IS NULL;
-- ;;
ALTER TABLE trigger_incidents ADD COLUMN IF NOT EXISTS work_order_id uuid;
-- ;;
CREATE INDEX IF NOT EXISTS trigger_incidents_work_order_idx
    ON trigger_incidents (work_order_id) WHERE work_order_id IS NOT NULL;
-- ;;
-- Sensors behind a gateway reported silent, by their last delivery: two or more
-- silent since the same moment make one gateway-offline work order.
CREATE TABLE IF NOT EXISTS trigger_silences (
    company_id      uuid NOT NULL,
    gateway_id      text NOT NULL,
    sensor_id       uuid NOT NULL,
    since           timestamptz NOT NULL,
    PRIMARY KEY (company_id, gateway_id, since, sensor_id)
);
-- ;;
CREATE TABLE IF NOT EXISTS trigger_outbox (
    id              uuid PRIMARY KEY,
    incident_id     uuid NOT NULL REFERENCES trigger_incidents (id) ON DELETE CASCADE,
    topic           text NOT NULL,
    record_key      text NOT NULL,
    payload         bytea NOT NULL,
    record_schema   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz
);
-- ;;
ALTER TABLE trigger_outbox ADD COLUMN IF NOT EXISTS record_schema text;
-- ;;
CREATE INDEX IF NOT EXISTS trigger_outbox_unsent_idx
    ON trigger_outbox (created_at) WHERE sent_at IS NULL;
-- ;;

-- ---------------------------------------------------------------------------
-- Enterprise security and compliance
-- ---------------------------------------------------------------------------
-- A plain table, not a hypertable: the seed's UNIQUE audit_number could not
-- hold on a hypertable (unique keys must include the time column), and its
-- volume is small because ingest aggregates repeated violations.
CREATE TABLE IF NOT EXISTS security_audit_logs (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id          uuid REFERENCES companies (id) ON DELETE CASCADE,
    audit_number        text NOT NULL UNIQUE,
    event_type          audit_event_type NOT NULL,
    severity            audit_severity NOT NULL DEFAULT 'info',
    user_id             uuid REFERENCES users (id) ON DELETE SET NULL,
    session_id          text,
    ip_address          text,
    user_agent          text,
    resource_type       text,
    resource_id         text,
    action_attempted    text,
    success             boolean NOT NULL DEFAULT false,
    failure_reason      text,
    additional_data     jsonb,
    risk_score          int CHECK (risk_score BETWEEN 0 AND 100),
    event_timestamp     timestamptz NOT NULL DEFAULT now(),
    created_at          timestamptz NOT NULL DEFAULT now()
);
-- ;;

CREATE TABLE IF NOT EXISTS compliance_frameworks (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id              uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    framework_code          text NOT NULL UNIQUE,
    framework_name          text NOT NULL,
    description             text,
    requirements            jsonb,
    evidence_required       text[] NOT NULL DEFAULT '{}',
    audit_frequency_months  int CHECK (audit_frequency_months IS NULL OR audit_frequency_months > 0),
    compliance_status       compliance_status NOT NULL DEFAULT 'unknown',
    last_audit_date         date,
    next_audit_due_date     date,
    compliance_officer_id   uuid REFERENCES users (id) ON DELETE SET NULL,
    external_auditor        text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
-- ;;

-- ---------------------------------------------------------------------------
-- Generated numbers and updated_at, for every table that has them.
-- ---------------------------------------------------------------------------
DO $$
DECLARE
    n record;
    t text;
BEGIN
    FOR n IN
        SELECT * FROM (VALUES
            ('route_optimizations', 'optimization_number', 'RO', true),
            ('dynamic_scheduling_rules', 'rule_number', 'DSR', false),
            ('predictive_maintenance_models', 'model_number', 'PM-MODEL', false),
            ('maintenance_predictions', 'prediction_number', 'PRED', true),
            ('customer_churn_predictions', 'prediction_number', 'CHURN', true),
            ('equipment_sensors', 'sensor_number', 'SENS', false),
            ('automated_service_triggers', 'trigger_number', 'AST', true),
            ('security_audit_logs', 'audit_number', 'SEC', true)
        ) AS v(tbl, col, prefix, yearly)
    LOOP
        EXECUTE format(
            'CREATE OR REPLACE TRIGGER %I BEFORE INSERT ON %I FOR EACH ROW '
            'EXECUTE FUNCTION tmiot_assign_number(%L, %L, %L)',
            n.tbl || '_assign_number', n.tbl, n.col, n.prefix, n.yearly
        );
    END LOOP;

    FOR t IN
        SELECT c.table_name
        FROM information_schema.columns AS c
        JOIN information_schema.tables AS tb USING (table_schema, table_name)
        WHERE c.table_schema = current_schema()
          AND c.column_name = 'updated_at'
          AND tb.table_type = 'BASE TABLE'
    LOOP
        EXECUTE format(
            'CREATE OR REPLACE TRIGGER %I BEFORE UPDATE ON %I FOR EACH ROW '
            'EXECUTE FUNCTION tmiot_touch_updated_at()',
            t || '_touch_updated_at', t
        );
    END LOOP;
END
$$;
-- ;;

-- ingest's sensor directory listens on `tmiot_sensors` (payload: sensor id)
-- for changes that alter how a device resolves; status and last-reading
-- updates do not notify, so stream's batched writes cause no storm.
CREATE OR REPLACE FUNCTION tmiot_notify_sensor_change()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('tmiot_sensors', CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END::text);
    RETURN NULL;
END
$$;
-- ;;

CREATE OR REPLACE TRIGGER equipment_sensors_notify_change
    AFTER INSERT OR DELETE OR UPDATE OF device_id, sensor_number, customer_equipment_id
    ON equipment_sensors
    FOR EACH ROW EXECUTE FUNCTION tmiot_notify_sensor_change();
-- ;;

-- ---------------------------------------------------------------------------
-- Indexes for the pipeline's hot queries.
-- ---------------------------------------------------------------------------
-- ingest's sensor cache: device_id / sensor_number -> sensor and tenant.
CREATE INDEX IF NOT EXISTS equipment_sensors_device_id_idx
    ON equipment_sensors (device_id) WHERE device_id IS NOT NULL;
-- ;;
CREATE INDEX IF NOT EXISTS equipment_sensors_equipment_idx
    ON equipment_sensors (customer_equipment_id);
-- ;;
CREATE INDEX IF NOT EXISTS customer_equipment_company_idx
    ON customer_equipment (company_id);
-- ;;
-- stream's missing-data sweep.
CREATE INDEX IF NOT EXISTS equipment_sensors_status_last_reading_idx
    ON equipment_sensors (status, last_reading_at);
-- ;;
-- Per-sensor anomaly history (dashboards, trigger evidence).
CREATE INDEX IF NOT EXISTS sensor_readings_anomalies_idx
    ON sensor_readings (sensor_id, reading_timestamp DESC) WHERE is_anomaly;
-- ;;
-- triggers' loader: active triggers per company and sensor.
CREATE INDEX IF NOT EXISTS automated_service_triggers_active_idx
    ON automated_service_triggers (company_id, sensor_id) WHERE is_active;
-- ;;
CREATE INDEX IF NOT EXISTS maintenance_predictions_equipment_idx
    ON maintenance_predictions (customer_equipment_id, status);
-- ;;
CREATE INDEX IF NOT EXISTS security_audit_logs_company_time_idx
    ON security_audit_logs (company_id, event_timestamp DESC);
-- ;;
CREATE INDEX IF NOT EXISTS kpi_values_definition_date_idx
    ON kpi_values (kpi_definition_id, measurement_date DESC);
-- ;;
CREATE INDEX IF NOT EXISTS work_orders_company_status_idx
    ON work_orders (company_id, status);
-- ;;

-- ---------------------------------------------------------------------------
-- Time series storage: TimescaleDB where present, plain PostgreSQL otherwise.
-- sensor_readings_hourly has the same columns on both paths.
-- ---------------------------------------------------------------------------
DO $$
DECLARE
    ts_schema text;
BEGIN
    SELECT n.nspname INTO ts_schema
    FROM pg_extension AS e JOIN pg_namespace AS n ON n.oid = e.extnamespace
    WHERE e.extname = 'timescaledb';

    IF ts_schema IS NULL THEN
        -- Readings arrive in time order, so a BRIN index stays tiny and
        -- serves time-range scans; per-sensor scans use the primary key.
        CREATE INDEX IF NOT EXISTS sensor_readings_time_brin_idx
            ON sensor_readings USING brin (reading_timestamp) WITH (pages_per_range = 32);
        CREATE OR REPLACE VIEW sensor_readings_hourly AS
            SELECT date_trunc('hour', reading_timestamp) AS bucket,
                   sensor_id,
                   min(value) AS min_value,
                   max(value) AS max_value,
                   avg(value) AS avg_value,
                   count(*) AS reading_count,
                   sum(CASE WHEN is_anomaly THEN 1 ELSE 0 END) AS anomaly_count
            FROM sensor_readings
            GROUP BY 1, 2;
        RETURN;
    END IF;

    EXECUTE format(
        'SELECT %I.create_hypertable(%L, %I.by_range(%L, INTERVAL %L), if_not_exists => TRUE, migrate_data => TRUE)',
        ts_schema, 'sensor_readings', ts_schema, 'reading_timestamp', '1 day'
    );

    IF NOT EXISTS (
        SELECT 1 FROM timescaledb_information.hypertables
        WHERE hypertable_name = 'sensor_readings'
          AND hypertable_schema = current_schema()
          AND compression_enabled
    ) THEN
        ALTER TABLE sensor_readings SET (
            timescaledb.compress,
            timescaledb.compress_segmentby = 'sensor_id',
            timescaledb.compress_orderby = 'reading_timestamp DESC'
        );
    END IF;
    EXECUTE format(
        'SELECT %I.add_compression_policy(%L, INTERVAL %L, if_not_exists => TRUE)',
        ts_schema, 'sensor_readings', '7 days'
    );
    EXECUTE format(
        'SELECT %I.add_retention_policy(%L, INTERVAL %L, if_not_exists => TRUE)',
        ts_schema, 'sensor_readings', '365 days'
    );

    IF to_regclass('sensor_readings_hourly') IS NULL THEN
        EXECUTE format(
            'CREATE MATERIALIZED VIEW sensor_readings_hourly '
            'WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS '
            'SELECT %I.time_bucket(INTERVAL %L, reading_timestamp) AS bucket, '
            '       sensor_id, '
            '       min(value) AS min_value, '
            '       max(value) AS max_value, '
            '       avg(value) AS avg_value, '
            '       count(*) AS reading_count, '
            '       sum(CASE WHEN is_anomaly THEN 1 ELSE 0 END) AS anomaly_count '
            'FROM sensor_readings GROUP BY 1, 2 WITH NO DATA',
            ts_schema, '1 hour'
        );
    END IF;
    EXECUTE format(
        'SELECT %I.add_continuous_aggregate_policy(%L, start_offset => INTERVAL %L, '
        'end_offset => INTERVAL %L, schedule_interval => INTERVAL %L, if_not_exists => TRUE)',
        ts_schema, 'sensor_readings_hourly', '3 days', '1 hour', '30 minutes'
    );
END
$$;
