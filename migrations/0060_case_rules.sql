-- Issue 15: the no-code workflow designer. Case rules are "when / if / then" records
-- an administrator or a supervisor builds in the browser; crm/cases/rule_engine.py runs
-- them in the transaction of the change that triggered them.
--
-- Triggers come from case_events: an insert trigger queues every event a rule may react
-- to (created, message in/out, status, assignment, classification, sla, task) into
-- case_rule_queue in the inserting transaction, whatever code path wrote it. The code
-- paths of intake, status changes, reassignment, correction, task closing and replies
-- drain the queue of their case before they commit (the rule acts in the same
-- transaction); a scheduler duty drains whatever another path left (the SLA evaluator's
-- warnings and breaches) a moment later. Idle and scheduled-time rules are the
-- scheduler's. Webhooks leave the case's transaction through case_rule_outbox, and so do
-- client messages (through the dispatcher's realtime path and its send rules).

INSERT INTO permissions (code, description_uk, description_en) VALUES
    ('cases.automation', 'Налаштовувати автоматизацію звернень (конструктор правил)',
                         'Configure case automation (the rule designer)');
INSERT INTO role_permissions (role_code, permission_code) VALUES
    ('admin', 'cases.automation'), ('supervisor', 'cases.automation');

ALTER TABLE case_events DROP CONSTRAINT case_events_kind_check;
ALTER TABLE case_events ADD CONSTRAINT case_events_kind_check CHECK (kind IN (
    'created', 'message', 'status', 'assignment', 'classification', 'client_link', 'flag',
    'merge', 'note', 'sla', 'escalation', 'deadline', 'task', 'info_request', 'notification',
    'automation', 'tag'));

-- Tags an automation (or later a person) puts on a case.
ALTER TABLE cases ADD COLUMN tags text[] NOT NULL DEFAULT '{}';

-- trigger: {"type": "case_created" | "field_changed" | "client_replied" | "agent_replied"
--           | "sla_warning" | "sla_breach" | "idle" | "task_done" | "scheduled", ...};
-- condition: the and/or/not tree; actions: the ordered list. All validated by msgspec.
CREATE TABLE case_rules (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    position        integer NOT NULL DEFAULT 0,
    is_active       boolean NOT NULL DEFAULT false,
    stop_processing boolean NOT NULL DEFAULT false,
    trigger_type    text NOT NULL,
    trigger         jsonb NOT NULL,
    condition       jsonb,
    actions         jsonb NOT NULL,
    version         integer NOT NULL DEFAULT 1,
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT herald_now(),
    updated_by      text NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT herald_now()
);
CREATE INDEX case_rules_active_idx ON case_rules (trigger_type, position, id) WHERE is_active;

-- Every saved state of a rule (create, update, on/off, move, delete, rollback): who, when
-- and the whole rule, so that any two can be compared and any one restored.
CREATE TABLE case_rule_versions (
    rule_id    bigint NOT NULL,
    version    integer NOT NULL,
    action     text NOT NULL CHECK (action IN ('create', 'update', 'delete', 'rollback')),
    spec       jsonb NOT NULL,
    by_login   text NOT NULL,
    at         timestamptz NOT NULL DEFAULT herald_now(),
    PRIMARY KEY (rule_id, version)
);

CREATE TABLE case_rule_queue (
    event_id bigint PRIMARY KEY,
    case_id  bigint NOT NULL
);
CREATE INDEX case_rule_queue_case_idx ON case_rule_queue (case_id, event_id);

-- Events written long after they happened (bulk loads of history) never trigger rules.
CREATE FUNCTION case_events_enqueue_rules() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO case_rule_queue (event_id, case_id) VALUES (NEW.id, NEW.case_id)
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER case_events_enqueue_rules AFTER INSERT ON case_events
    FOR EACH ROW
    WHEN (NEW.at > herald_now() - interval '1 hour'
          AND NEW.kind IN ('created', 'message', 'status', 'assignment', 'classification',
                           'sla', 'task'))
    EXECUTE FUNCTION case_events_enqueue_rules();

-- The run journal: one row per rule that matched a case (dry runs are not written). The
-- loop guard counts a rule's runs on a case here.
CREATE TABLE case_rule_runs (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    case_id   bigint NOT NULL REFERENCES cases,
    rule_id   bigint NOT NULL,
    version   integer NOT NULL,
    trigger   text NOT NULL,
    event_id  bigint,
    depth     smallint NOT NULL,
    outcome   text NOT NULL CHECK (outcome IN ('done', 'capped', 'no_match')),
    actions   jsonb NOT NULL,
    at        timestamptz NOT NULL DEFAULT herald_now()
);
CREATE INDEX case_rule_runs_case_rule_idx ON case_rule_runs (case_id, rule_id, at);

-- Work that must not run inside the case's transaction: webhooks (signed, retried, with a
-- time limit) and client messages (the dispatcher's realtime path).
CREATE TABLE case_rule_outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    case_id         bigint NOT NULL REFERENCES cases,
    rule_id         bigint NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('webhook', 'message')),
    payload         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT herald_now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT herald_now(),
    sent_at         timestamptz
);
CREATE INDEX case_rule_outbox_due_idx ON case_rule_outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX case_rule_outbox_case_idx ON case_rule_outbox (case_id, id);

-- Supervisors' notices raised by rules (listed on the designer page and by the API).
CREATE TABLE case_rule_alerts (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    case_id    bigint NOT NULL REFERENCES cases,
    rule_id    bigint NOT NULL,
    group_code text,
    text       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT herald_now()
);
CREATE INDEX case_rule_alerts_created_idx ON case_rule_alerts (created_at DESC);

-- The key webhooks are signed with (HMAC-SHA256); shown to administrators only.
CREATE TABLE case_rule_settings (
    id             boolean PRIMARY KEY DEFAULT true CHECK (id),
    webhook_secret text NOT NULL
);
INSERT INTO case_rule_settings (webhook_secret)
    VALUES (md5(random()::text || random()::text) || md5(random()::text));
