-- Incidents: what is worth waking someone for. Anomalies stay rows in
-- `anomalies` (evidence, dashboards); pages come from incidents only.
--
-- The detector runs the incident rules on every check it scores and writes
-- incidents and their events in the transaction that moves its watermark,
-- so the alerter's work is handed over with the data that caused it: a
-- commit that becomes visible late is still read (no timestamp cursor).

CREATE TABLE IF NOT EXISTS incidents (
    id               bigserial   PRIMARY KEY,
    api_name         text        NOT NULL,
    -- down, slow
    kind             text        NOT NULL CHECK (kind IN ('down', 'slow')),
    -- open; resolving (recovered, held for ALERT_FLAP_WINDOW so that a
    -- flap is the same incident); resolved.
    state            text        NOT NULL CHECK (state IN ('open', 'resolving', 'resolved')),
    -- First bad check of the episode (data time).
    started_at       timestamptz NOT NULL,
    -- The check that met the opening rule.
    opened_at        timestamptz NOT NULL,
    -- First check of the current recovery (resolving, resolved).
    recovered_at     timestamptz,
    -- When the resolution became final (after the flap window).
    resolved_at      timestamptz,
    -- high or critical.
    peak_severity    text        NOT NULL CHECK (peak_severity IN ('medium', 'high', 'critical')),
    -- The rule that opened it, in words.
    reason           text        NOT NULL,
    -- Checks, failures, anomalies, latency against the baseline (JSON).
    evidence         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- Times it re-opened within the flap window.
    flaps            integer     NOT NULL DEFAULT 0,
    -- The alerter's side: the opening fell in a silence or maintenance
    -- window and was not notified (with why).
    silenced         boolean     NOT NULL DEFAULT false,
    silence_reason   text,
    -- When the opening was notified; NULL while not (yet) notified.
    notified_at      timestamptz,
    -- Last opening or reminder notified.
    last_notified_at timestamptz,
    reminders        integer     NOT NULL DEFAULT 0,
    resolve_notified_at timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- At most one incident per API and kind that is not resolved.
CREATE UNIQUE INDEX IF NOT EXISTS incidents_one_current
    ON incidents (api_name, kind) WHERE state <> 'resolved';
CREATE INDEX IF NOT EXISTS incidents_opened_at ON incidents (opened_at DESC);
CREATE INDEX IF NOT EXISTS incidents_resolved_at ON incidents (resolved_at)
    WHERE resolved_at IS NOT NULL;

-- The hand-off queue from detector to alerter: one row per opening and per
-- final resolution, written with the incident. The alerter claims pending
-- rows (FOR UPDATE SKIP LOCKED, in pages), groups them, and marks them
-- handled in the transaction that queues their notification.
CREATE TABLE IF NOT EXISTS incident_events (
    id            bigserial   PRIMARY KEY,
    incident_id   bigint      NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    event         text        NOT NULL CHECK (event IN ('open', 'resolve')),
    -- Data time of the decision.
    at            timestamptz NOT NULL,
    -- First sign of what was decided (the first bad check of an opening,
    -- the first good check of a resolution): grouping waits from it.
    first_sign_at timestamptz NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- Set by the alerter; NULL while pending.
    handled_at    timestamptz,
    -- notified, silenced (not notified, and why is on the incident)
    outcome       text
);
CREATE INDEX IF NOT EXISTS incident_events_pending
    ON incident_events (id) WHERE handled_at IS NULL;
CREATE INDEX IF NOT EXISTS incident_events_incident ON incident_events (incident_id);

-- Silences set with `alerter silence add`: incidents of matching APIs are
-- recorded but not notified while the silence lasts.
CREATE TABLE IF NOT EXISTS silences (
    id          bigserial   PRIMARY KEY,
    -- A glob on api_name: * any run of characters, ? one character.
    api_pattern text        NOT NULL,
    starts_at   timestamptz NOT NULL DEFAULT now(),
    ends_at     timestamptz NOT NULL,
    created_by  text        NOT NULL,
    reason      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Set by `alerter silence expire`.
    expired_at  timestamptz,
    CHECK (ends_at > starts_at)
);
CREATE INDEX IF NOT EXISTS silences_ends_at ON silences (ends_at);

-- The incident rules' state of each API (baseline, counters), saved with
-- the detector's watermark so that a restart resumes where it stopped.
ALTER TABLE detector_watermarks ADD COLUMN IF NOT EXISTS incident_state jsonb;
