-- The alerter's state: per-API alert and down state, its progress through
-- the anomalies, the outbox of notifications, and the reports produced.

-- One row per API the alerter has seen.
CREATE TABLE IF NOT EXISTS alert_state (
    api_name            text        PRIMARY KEY,
    -- Observation time of the anomaly that last caused an alert.
    last_alert_at       timestamptz,
    -- Anomalies held back by the cooldown since the last alert.
    suppressed          integer     NOT NULL DEFAULT 0,
    -- First failed check of the current outage, while the API is down.
    down_since          timestamptz,
    -- Observation time of the last anomaly the alerter has read.
    watermark           timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- Where the alerter's scan of new anomalies (by detected_at) resumes.
CREATE TABLE IF NOT EXISTS alerter_progress (
    id          integer     PRIMARY KEY CHECK (id = 1),
    detected_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS anomalies_detected_at_idx ON anomalies (detected_at);

-- The outbox: every notification is written here first, then sent; one row
-- per channel, retried with backoff until sent or out of attempts.
CREATE TABLE IF NOT EXISTS notifications (
    id              bigserial   PRIMARY KEY,
    -- alert, down, recovered, report, test
    kind            text        NOT NULL,
    api_name        text,
    -- email, slack, teams, webhook, none
    channel         text        NOT NULL,
    -- Identifies the event: the same event is never queued twice.
    dedup_key       text        NOT NULL,
    subject         text        NOT NULL,
    body_text       text        NOT NULL,
    body_html       text,
    payload         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- pending, sent, failed (out of attempts), skipped (no channel)
    state           text        NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'sent', 'failed', 'skipped')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    CONSTRAINT notifications_dedup UNIQUE (channel, dedup_key)
);
CREATE INDEX IF NOT EXISTS notifications_due
    ON notifications (next_attempt_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS notifications_created ON notifications (created_at DESC);

-- Status reports produced, by the end of their period: whoever inserts the
-- row writes the report, so two alerters never send the same one.
CREATE TABLE IF NOT EXISTS status_reports (
    period_end   timestamptz PRIMARY KEY,
    period_start timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
