-- Messaging engine: templates, campaigns, audience batches, message events, held messages.
--
-- Flow: launch snapshots the audience into campaign_batches (one row per ~1,000
-- recipients of one shard); queue messages carry only (campaign, batch) references, so
-- pause, resume and crash recovery are "publish the references of batches not done yet".
-- Every outcome is an append-only row of message_events written with COPY; a message's
-- id is deterministic ('c<campaign>:<client>:<step>'), which makes redelivery detectable
-- and is the idempotency key passed to providers.

-- Shard of a client: the same function in SQL and Python (dispatcher/sharding.py).
CREATE FUNCTION herald_shard(client_id bigint, shards integer) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN ((client_id * 2654435761) % 4294967296) % shards;

CREATE TABLE message_templates (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    topic           text NOT NULL REFERENCES message_topics,
    -- Urgent messages (e.g. a gas shut-off warning) are exempt from quiet hours and alerts.
    urgent          boolean NOT NULL DEFAULT false,
    current_version integer NOT NULL DEFAULT 1,
    created_by      bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Every save is a new version; campaigns pin one; old versions stay readable.
CREATE TABLE message_template_versions (
    template_id bigint NOT NULL REFERENCES message_templates,
    version     integer NOT NULL,
    language    text NOT NULL DEFAULT 'uk' CHECK (language IN ('uk', 'en')),
    variants    jsonb NOT NULL,
    created_by  bigint,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (template_id, version)
);

CREATE TABLE campaigns (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                    text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status                  text NOT NULL DEFAULT 'draft' CHECK (status IN
                                ('draft', 'scheduled', 'launching', 'running', 'paused',
                                 'stopped', 'completed', 'failed')),
    template_id             bigint NOT NULL,
    template_version        integer NOT NULL,
    channel_chain           text[] NOT NULL DEFAULT '{email,viber,sms}',
    receipt_timeout_seconds integer NOT NULL DEFAULT 900 CHECK (receipt_timeout_seconds > 0),
    -- {"kind": "clients", "client_ids": [...]} or {"kind": "all", "regions": [...]}
    audience                jsonb NOT NULL,
    rate_per_minute         integer CHECK (rate_per_minute > 0),
    rate_per_hour           integer CHECK (rate_per_hour > 0),
    scheduled_at            timestamptz,
    shards                  integer,
    audience_size           integer,
    batches_total           integer,
    launched_at             timestamptz,
    finished_at             timestamptz,
    error                   text,
    created_by              bigint,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (template_id, template_version) REFERENCES message_template_versions
);
CREATE INDEX campaigns_due_idx ON campaigns (scheduled_at) WHERE status IN ('scheduled', 'launching');

-- Every unit of work of a campaign: the launch snapshot (step 0, in batch_no order) and
-- the recipients later handed to a chain step (fallback after a failed receipt or a
-- timeout, release of held messages). "Nothing pending" is exactly "every row done".
CREATE TABLE campaign_batches (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_id bigint NOT NULL REFERENCES campaigns ON DELETE CASCADE,
    step        smallint NOT NULL DEFAULT 0,
    batch_no    integer,
    shard       integer NOT NULL,
    client_ids  bigint[] NOT NULL,
    -- Times a worker started on it: only a retried batch can hold ids already sent.
    attempts    integer NOT NULL DEFAULT 0,
    done        boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    done_at     timestamptz
);
CREATE INDEX campaign_batches_campaign_idx ON campaign_batches (campaign_id, batch_no);
CREATE INDEX campaign_batches_pending_idx ON campaign_batches (campaign_id) WHERE NOT done;

-- Append-only outcomes. status: queued, held, sent, delivered, read, failed, skipped,
-- converted. Partitioned by month; old months are detached and dropped (NF-10: 5 years).
CREATE TABLE message_events (
    message_id  text NOT NULL,
    campaign_id bigint,
    client_id   bigint NOT NULL,
    step        smallint NOT NULL,
    channel     text,
    status      text NOT NULL,
    reason      text,
    provider_id text,
    at          timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (at);
CREATE INDEX message_events_message_idx ON message_events (message_id);
CREATE INDEX message_events_client_idx ON message_events (client_id, at DESC);
CREATE INDEX message_events_campaign_idx ON message_events (campaign_id, status) WHERE campaign_id IS NOT NULL;

CREATE FUNCTION message_events_ensure_partitions(from_month date, months integer) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    m date;
BEGIN
    FOR i IN 0 .. months - 1 LOOP
        m := date_trunc('month', from_month)::date + make_interval(months => i);
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I PARTITION OF message_events FOR VALUES FROM (%L) TO (%L)',
            'message_events_' || to_char(m, 'YYYYMM'), m, (m + interval '1 month')::date);
    END LOOP;
END $$;

SELECT message_events_ensure_partitions(date_trunc('month', now())::date - 31, 15);
CREATE TABLE message_events_default PARTITION OF message_events DEFAULT;

-- Messages parked by quiet hours (release_at known), an air-raid alert (released when
-- the region's alert is lifted) or a paused campaign (released on resume). The
-- scheduler republishes them; nothing is dropped.
CREATE TABLE held_messages (
    message_id  text PRIMARY KEY,
    campaign_id bigint,
    client_id   bigint NOT NULL,
    step        smallint NOT NULL,
    reason      text NOT NULL CHECK (reason IN ('quiet_hours', 'air_raid', 'rate_limit', 'paused')),
    region_code text,
    release_at  timestamptz,
    held_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX held_messages_release_idx ON held_messages (release_at) WHERE release_at IS NOT NULL;
CREATE INDEX held_messages_campaign_idx ON held_messages (campaign_id);
CREATE INDEX held_messages_region_idx ON held_messages (region_code) WHERE reason = 'air_raid';

INSERT INTO permissions (code, description_uk, description_en) VALUES
    ('templates.read',   'Переглядати шаблони повідомлень',      'View message templates'),
    ('templates.manage', 'Створювати та змінювати шаблони',       'Create and change templates'),
    ('campaigns.read',   'Переглядати розсилки та їх статистику', 'View campaigns and their statistics'),
    ('campaigns.manage', 'Створювати та змінювати розсилки',      'Create and edit campaigns'),
    ('campaigns.launch', 'Запускати, призупиняти, зупиняти розсилки', 'Launch, pause, resume, stop campaigns');

INSERT INTO role_permissions (role_code, permission_code) VALUES
    ('admin', 'templates.read'), ('admin', 'templates.manage'), ('admin', 'campaigns.read'),
    ('admin', 'campaigns.manage'), ('admin', 'campaigns.launch'),
    ('marketer', 'templates.read'), ('marketer', 'templates.manage'), ('marketer', 'campaigns.read'),
    ('marketer', 'campaigns.manage'), ('marketer', 'campaigns.launch'),
    ('supervisor', 'campaigns.read'), ('supervisor', 'templates.read'),
    ('analyst', 'campaigns.read'), ('analyst', 'templates.read'),
    ('operator_cc', 'templates.read'), ('operator_cos', 'templates.read');
