-- Event producers, trigger rules and the realtime path (issue 6, points 4 and 5).
--
-- Producers (billing, shop, case system, mobile app) post events with an API key of
-- their own; only the key's SHA-256 is stored. An event is stored once per
-- (producer, event id): a repeated post is acknowledged and never processed again.
-- A matching trigger rule, or an operator sending from the client card, makes one
-- realtime_messages row: the unit of work of one message down its channel chain, as
-- campaign_batches is for a campaign. Queue messages carry only (unit, step); message
-- ids are 't<unit>:<client>:<step>' (trigger) and 'o<unit>:<client>:<step>' (operator).

-- Templates an operator may send from a card during a call (bank details, service-centre
-- address and hours, app link). message_templates is a small table: the ALTER is instant.
ALTER TABLE message_templates ADD COLUMN operator_send boolean NOT NULL DEFAULT false;

CREATE TABLE producers (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    key_hash    bytea NOT NULL,
    -- The first characters of the key, to tell keys apart in lists (the rest is secret).
    key_prefix  text NOT NULL,
    event_types text[] NOT NULL CHECK (cardinality(event_types) BETWEEN 1 AND 100),
    is_active   boolean NOT NULL DEFAULT true,
    created_by  bigint,
    created_at  timestamptz NOT NULL DEFAULT now(),
    deactivated_at timestamptz
);
CREATE UNIQUE INDEX producers_key_hash_key ON producers (key_hash);
CREATE UNIQUE INDEX producers_name_key ON producers (lower(name));

-- Every event accepted. The primary key is the idempotency guarantee; old months can be
-- deleted by received_at (only the recent past needs deduplicating).
CREATE TABLE producer_events (
    producer_id bigint NOT NULL REFERENCES producers,
    event_id    text NOT NULL,
    type        text NOT NULL,
    client_id   bigint NOT NULL,
    occurred_at timestamptz NOT NULL,
    data        jsonb NOT NULL,
    -- How many messages the event triggered (contact-policy refusals not counted).
    messages    integer NOT NULL DEFAULT 0,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (producer_id, event_id)
);
CREATE INDEX producer_events_received_idx ON producer_events (received_at);
CREATE INDEX producer_events_client_idx ON producer_events (client_id, occurred_at DESC);

-- Trigger rules: an event type and conditions -> a pinned template version and a chain.
-- conditions: [{"path": "amount", "op": "gte", "value": 100}] on the event's data;
-- client_conditions: [{"attribute": "region", "op": "in", "value": ["UA-32"]}].
-- Contact policy: at most max_messages per client in period_seconds, and at least
-- min_interval_seconds between two messages of the rule to one client.
CREATE TABLE trigger_rules (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                    text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    event_type              text NOT NULL,
    conditions              jsonb NOT NULL DEFAULT '[]',
    client_conditions       jsonb NOT NULL DEFAULT '[]',
    template_id             bigint NOT NULL,
    template_version        integer NOT NULL,
    channel_chain           text[] NOT NULL,
    receipt_timeout_seconds integer NOT NULL DEFAULT 900 CHECK (receipt_timeout_seconds > 0),
    delay_seconds           integer NOT NULL DEFAULT 0 CHECK (delay_seconds >= 0),
    max_messages            integer CHECK (max_messages > 0),
    period_seconds          integer CHECK (period_seconds > 0),
    min_interval_seconds    integer CHECK (min_interval_seconds > 0),
    is_active               boolean NOT NULL DEFAULT true,
    version                 integer NOT NULL DEFAULT 1,
    created_by              bigint,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (template_id, template_version) REFERENCES message_template_versions,
    CHECK ((max_messages IS NULL) = (period_seconds IS NULL))
);
CREATE INDEX trigger_rules_event_type_idx ON trigger_rules (event_type) WHERE is_active;

-- One message on the realtime path: who, what, which chain step is next, and when it is
-- due. done: the current step has its outcome (sent and awaiting a receipt, held, or
-- final); a failed receipt or a release from hold reopens it at another step.
CREATE TABLE realtime_messages (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind                    text NOT NULL CHECK (kind IN ('trigger', 'operator')),
    client_id               bigint NOT NULL,
    account_id              bigint,
    rule_id                 bigint REFERENCES trigger_rules,
    producer_id             bigint,
    event_id                text,
    template_id             bigint NOT NULL,
    template_version        integer NOT NULL,
    channel_chain           text[] NOT NULL,
    receipt_timeout_seconds integer NOT NULL DEFAULT 900,
    step                    smallint NOT NULL DEFAULT 0,
    done                    boolean NOT NULL DEFAULT false,
    -- Refused before any channel was tried (contact policy): never sent, not counted.
    refused                 text,
    due_at                  timestamptz NOT NULL DEFAULT now(),
    published_at            timestamptz,
    attempts                integer NOT NULL DEFAULT 0,
    created_by              bigint,
    created_at              timestamptz NOT NULL DEFAULT now(),
    done_at                 timestamptz,
    FOREIGN KEY (template_id, template_version) REFERENCES message_template_versions
);
-- The scheduler's sweep: due and not done (delayed ones, and any whose publication was lost).
CREATE INDEX realtime_messages_pending_idx ON realtime_messages (due_at) WHERE NOT done;
-- Contact policy: a rule's recent messages to a client.
CREATE INDEX realtime_messages_policy_idx ON realtime_messages (rule_id, client_id, created_at)
    WHERE rule_id IS NOT NULL AND refused IS NULL;
CREATE INDEX realtime_messages_client_idx ON realtime_messages (client_id, created_at DESC);

INSERT INTO permissions (code, description_uk, description_en) VALUES
    ('events.manage',   'Керувати джерелами подій (ключі API продюсерів)',
                        'Manage event producers (their API keys)'),
    ('triggers.read',   'Переглядати тригерні правила', 'View trigger rules'),
    ('triggers.manage', 'Створювати та змінювати тригерні правила', 'Create and change trigger rules'),
    ('messages.send',   'Надсилати клієнту повідомлення з картки під час розмови',
                        'Send a client a message from the card during a call'),
    ('templates.operator', 'Дозволяти шаблони для надсилання операторами',
                           'Allow templates for operator sends');

INSERT INTO role_permissions (role_code, permission_code) VALUES
    ('admin', 'events.manage'), ('admin', 'triggers.read'), ('admin', 'triggers.manage'),
    ('admin', 'messages.send'), ('admin', 'templates.operator'),
    ('marketer', 'triggers.read'), ('marketer', 'triggers.manage'),
    ('supervisor', 'triggers.read'), ('supervisor', 'messages.send'),
    ('analyst', 'triggers.read'),
    ('operator_cc', 'messages.send'), ('operator_cos', 'messages.send');
