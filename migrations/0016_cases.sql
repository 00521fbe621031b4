-- Cases (appeals), issue 5 points 1-4: intake from every channel, identification,
-- repeat and duplicate flags, categorisation, the status model and its automations.
--
-- Sizing: 10 M historical cases, tens of thousands open. cases is one table (looked up by
-- id, number, client and the open-case queue indexes; partial indexes keep the queue
-- indexes as small as the open set). case_events is append-only and read per case; it
-- is one table too, so that the external message id (e-mail Message-ID, Viber message
-- token, Telegram message, call id) can be unique across it: that uniqueness makes every
-- intake idempotent under webhook retries and threads e-mail replies.
--
-- Everything SLA, routing and statistics need later is stored as events with times:
-- every status change (from, to, at, who), assignment and classification correction.

INSERT INTO permissions (code, description_uk, description_en) VALUES
    ('cases.read',   'Переглядати звернення та їхню історію',
                     'View cases and their history'),
    ('cases.manage', 'Реєструвати та обробляти звернення: статус, категорія, об''єднання',
                     'Register and work cases: status, category, merge'),
    ('cases.admin',  'Налаштовувати звернення: категорії, переходи статусів, правила',
                     'Configure cases: categories, status transitions, rules'),
    ('cases.intake', 'Надсилати звернення з каналів: форми сайту й кабінету, e-mail, застосунок',
                     'Post cases from channels: site and cabinet forms, e-mail, mobile app');

INSERT INTO role_permissions (role_code, permission_code) VALUES
    ('admin', 'cases.read'), ('admin', 'cases.manage'), ('admin', 'cases.admin'),
    ('supervisor', 'cases.read'), ('supervisor', 'cases.manage'),
    ('operator_cc', 'cases.read'), ('operator_cc', 'cases.manage'),
    ('operator_cos', 'cases.read'), ('operator_cos', 'cases.manage'),
    ('analyst', 'cases.read'),
    ('integration', 'cases.intake');

-- Statuses are fixed (SLA pauses on on_hold, closed is final); the transitions between
-- them are data an administrator edits.
CREATE TABLE case_statuses (
    code     text PRIMARY KEY CHECK (code ~ '^[a-z][a-z_]{1,30}$'),
    name_uk  text NOT NULL,
    name_en  text NOT NULL,
    position smallint NOT NULL,
    is_final boolean NOT NULL DEFAULT false
);

INSERT INTO case_statuses (code, name_uk, name_en, position, is_final) VALUES
    ('new',         'Нове',         'New',         1, false),
    ('in_progress', 'В роботі',     'In Progress', 2, false),
    ('on_hold',     'Очікування',   'On Hold',     3, false),
    ('resolved',    'Вирішено',     'Resolved',    4, false),
    ('closed',      'Закрито',      'Closed',      5, true);

CREATE TABLE case_transitions (
    from_status text NOT NULL REFERENCES case_statuses,
    to_status   text NOT NULL REFERENCES case_statuses,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL DEFAULT 'system',
    PRIMARY KEY (from_status, to_status),
    CHECK (from_status <> to_status)
);

INSERT INTO case_transitions (from_status, to_status) VALUES
    ('new', 'in_progress'),
    ('in_progress', 'on_hold'),
    ('on_hold', 'in_progress'),
    ('in_progress', 'resolved'),
    ('on_hold', 'resolved'),
    ('resolved', 'closed'),
    ('resolved', 'in_progress');

CREATE TABLE case_categories (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    parent_id  bigint REFERENCES case_categories,
    code       text NOT NULL CHECK (code ~ '^[a-z][a-z0-9_.-]{1,62}$'),
    name_uk    text NOT NULL CHECK (length(name_uk) BETWEEN 1 AND 200),
    name_en    text NOT NULL CHECK (length(name_en) BETWEEN 1 AND 200),
    position   integer NOT NULL DEFAULT 0,
    is_active  boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (parent_id IS NULL OR parent_id <> id)
);
CREATE UNIQUE INDEX case_categories_code_key ON case_categories (code);
CREATE INDEX case_categories_parent_idx ON case_categories (parent_id);

-- A starter tree from the customer's topics (technical, financial, informational).
INSERT INTO case_categories (code, name_uk, name_en, position) VALUES
    ('billing', 'Рахунки та оплати', 'Bills and payments', 1),
    ('meter',   'Лічильники та показники', 'Meters and readings', 2),
    ('supply',  'Газопостачання', 'Gas supply', 3),
    ('account', 'Особовий рахунок', 'Personal account', 4),
    ('info',    'Довідкова інформація', 'Information', 5);
INSERT INTO case_categories (parent_id, code, name_uk, name_en, position)
SELECT p.id, c.code, c.name_uk, c.name_en, c.position
FROM (VALUES
    ('billing', 'billing.debt',         'Заборгованість',               'Debt', 1),
    ('billing', 'billing.payment',      'Оплата не зарахована',         'Payment not credited', 2),
    ('billing', 'billing.charges',      'Нарахування',                  'Charges', 3),
    ('meter',   'meter.reading',        'Передача показників',          'Meter reading', 1),
    ('meter',   'meter.verification',   'Повірка лічильника',           'Meter verification', 2),
    ('supply',  'supply.outage',        'Відсутність газопостачання',   'No gas supply', 1),
    ('supply',  'supply.leak',          'Запах газу',                   'Gas smell', 2),
    ('supply',  'supply.connection',    'Нове приєднання',              'New connection', 3),
    ('account', 'account.owner_change', 'Зміна власника',               'Change of owner', 1),
    ('account', 'account.update',       'Актуалізація даних',           'Data update', 2)
) AS c(parent, code, name_uk, name_en, position)
JOIN case_categories p ON p.code = c.parent;

-- Administrator settings of the case module (one row).
CREATE TABLE case_settings (
    id                       boolean PRIMARY KEY DEFAULT true CHECK (id),
    -- A new case of the same client and category within this many days is a repeat.
    repeat_window_days       integer NOT NULL DEFAULT 30 CHECK (repeat_window_days BETWEEN 1 AND 365),
    -- Same client, channel and normalised text within this many minutes is a duplicate.
    duplicate_window_minutes integer NOT NULL DEFAULT 10
                             CHECK (duplicate_window_minutes BETWEEN 1 AND 1440),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    updated_by               text NOT NULL DEFAULT 'system'
);
INSERT INTO case_settings DEFAULT VALUES;

-- Webhook secrets of the chat channels: Telegram's secret_token (sent back in the
-- X-Telegram-Bot-Api-Secret-Token header) and the Viber bot's auth token (the key of the
-- X-Viber-Content-Signature HMAC). Set by an administrator, never returned by the API.
CREATE TABLE case_webhook_secrets (
    channel    text PRIMARY KEY CHECK (channel IN ('viber', 'telegram')),
    secret     text NOT NULL CHECK (length(secret) BETWEEN 16 AND 256),
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL
);

-- Auto-classification: the first active rule (by position, then id) whose every given
-- condition holds proposes a category, type and/or priority. An empty array or a NULL
-- is "any".
CREATE TABLE case_classification_rules (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    position       integer NOT NULL DEFAULT 0,
    is_active      boolean NOT NULL DEFAULT true,
    keywords       text[] NOT NULL DEFAULT '{}',   -- normalised; any one found in subject + text
    channels       text[] NOT NULL DEFAULT '{}',
    consumer_types text[] NOT NULL DEFAULT '{}',   -- any of the client's accounts
    has_debt       boolean,                        -- any account with debt > 0
    identified     boolean,                        -- the case is linked to a client
    category_id    bigint REFERENCES case_categories,
    case_type      text CHECK (case_type IN ('technical', 'financial', 'informational')),
    priority       text CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (category_id IS NOT NULL OR case_type IS NOT NULL OR priority IS NOT NULL)
);

INSERT INTO case_classification_rules (name, position, keywords, category_id, case_type, priority)
SELECT r.name, r.position, r.keywords, c.id, r.case_type, r.priority
FROM (VALUES
    ('Запах газу', 10, ARRAY['запах газу', 'пахне газом', 'витік газу'], 'supply.leak', 'technical', 'urgent'),
    ('Немає газу', 20, ARRAY['немає газу', 'відсутній газ', 'відключили газ'], 'supply.outage', 'technical', 'high'),
    ('Показники', 30, ARRAY['показник', 'показання'], 'meter.reading', 'informational', 'low'),
    ('Оплата', 40, ARRAY['не зарахован', 'оплатив', 'оплатила', 'квитанці'], 'billing.payment', 'financial', 'normal'),
    ('Заборгованість', 50, ARRAY['борг', 'заборгован'], 'billing.debt', 'financial', 'normal')
) AS r(name, position, keywords, category, case_type, priority)
JOIN case_categories c ON c.code = r.category;

-- No-code automations. client_reply: an inbound message from the client on a case in
-- from_status moves it to to_status. idle: a case in from_status with neither a status
-- change nor a client message for idle_hours moves to to_status (the scheduler's job).
CREATE TABLE case_automation_rules (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    is_active   boolean NOT NULL DEFAULT true,
    trigger     text NOT NULL CHECK (trigger IN ('client_reply', 'idle')),
    from_status text NOT NULL REFERENCES case_statuses,
    to_status   text NOT NULL REFERENCES case_statuses,
    idle_hours  integer CHECK (idle_hours BETWEEN 1 AND 8760),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (from_status <> to_status),
    CHECK ((trigger = 'idle') = (idle_hours IS NOT NULL))
);

INSERT INTO case_automation_rules (name, trigger, from_status, to_status, idle_hours) VALUES
    ('Клієнт відповів під час очікування', 'client_reply', 'on_hold', 'in_progress', NULL),
    ('Клієнт відповів після вирішення', 'client_reply', 'resolved', 'in_progress', NULL),
    ('Закрити вирішене без відповіді 72 год', 'idle', 'resolved', 'closed', 72);

-- Human-readable numbers: ЗВ-<year of creation, Kyiv time>-<7+ digits of a sequence>.
CREATE SEQUENCE case_number_seq;

CREATE TABLE cases (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    number               text NOT NULL,
    channel              text NOT NULL CHECK (channel IN
                             ('call', 'viber', 'telegram', 'site', 'cabinet', 'email', 'app', 'walk_in')),
    -- NULL: anonymous. Set at creation, or once afterwards by an explicit, audited link.
    client_id            bigint REFERENCES clients,
    account_id           bigint REFERENCES accounts,
    identified_by        text CHECK (identified_by IN ('client_id', 'or_number', 'phone', 'email', 'operator')),
    -- Several clients matched the contact: the operator chooses among these.
    candidate_client_ids bigint[] NOT NULL DEFAULT '{}',
    -- Contact details as received (phone normalised to E.164 when it parsed).
    contact_name         text,
    contact_phone        text,
    contact_email        text,
    contact_or           text,
    -- 'viber:<sender id>' / 'telegram:<chat id>': a follow-up lands in the open case.
    chat_ref             text,
    subject              text,
    body                 text NOT NULL,
    -- SHA-256 of the normalised subject and text: duplicate detection.
    text_hash            bytea NOT NULL,
    category_id          bigint REFERENCES case_categories,
    case_type            text CHECK (case_type IN ('technical', 'financial', 'informational')),
    priority             text NOT NULL DEFAULT 'normal' CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    -- What auto-classification proposed on intake (the operator's correction is an event).
    proposed_category_id bigint,
    proposed_type        text,
    proposed_priority    text,
    proposed_rule_id     bigint,
    status               text NOT NULL DEFAULT 'new' REFERENCES case_statuses,
    status_changed_at    timestamptz NOT NULL DEFAULT now(),
    -- Routing (issue 5 point 6) fills these.
    group_code           text,
    assignee_id          bigint REFERENCES users,
    is_repeat            boolean NOT NULL DEFAULT false,
    repeat_of_id         bigint REFERENCES cases,
    duplicate_of_id      bigint REFERENCES cases,
    merged_into_id       bigint REFERENCES cases,
    last_inbound_at      timestamptz NOT NULL DEFAULT now(),
    last_outbound_at     timestamptz,
    created_by           bigint REFERENCES users,
    created_by_login     text NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CHECK (merged_into_id IS NULL OR (merged_into_id <> id AND status = 'closed')),
    CHECK (duplicate_of_id IS NULL OR duplicate_of_id <> id),
    CHECK ((client_id IS NULL) = (identified_by IS NULL)),
    CHECK (account_id IS NULL OR client_id IS NOT NULL)
);
CREATE UNIQUE INDEX cases_number_key ON cases (number);
-- The operator queue: open cases by status/priority/age; by channel; everything by age.
CREATE INDEX cases_queue_idx ON cases (status, priority, created_at, id) WHERE status <> 'closed';
CREATE INDEX cases_open_idx ON cases (created_at, id) WHERE status <> 'closed';
CREATE INDEX cases_open_channel_idx ON cases (channel, created_at, id) WHERE status <> 'closed';
CREATE INDEX cases_created_idx ON cases (created_at, id);
CREATE INDEX cases_status_created_idx ON cases (status, created_at, id);
-- A client's cases (previous cases, repeats, duplicates).
CREATE INDEX cases_client_idx ON cases (client_id, created_at DESC) WHERE client_id IS NOT NULL;
-- Follow-ups of a chat; idle automations; category usage; merges and duplicates.
CREATE INDEX cases_chat_idx ON cases (chat_ref, id) WHERE chat_ref IS NOT NULL AND status <> 'closed';
CREATE INDEX cases_status_changed_idx ON cases (status, status_changed_at) WHERE status <> 'closed';
CREATE INDEX cases_category_idx ON cases (category_id, created_at) WHERE category_id IS NOT NULL;
CREATE INDEX cases_assignee_idx ON cases (assignee_id, status) WHERE assignee_id IS NOT NULL AND status <> 'closed';
CREATE INDEX cases_merged_into_idx ON cases (merged_into_id) WHERE merged_into_id IS NOT NULL;
CREATE INDEX cases_duplicate_of_idx ON cases (duplicate_of_id) WHERE duplicate_of_id IS NOT NULL;

-- The number comes from the sequence and the year of created_at, unless a bulk loader
-- supplies it.
CREATE FUNCTION cases_assign_number() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    n text;
BEGIN
    IF NEW.number IS NULL THEN
        n := nextval('case_number_seq')::text;
        NEW.number := 'ЗВ-' || to_char(NEW.created_at AT TIME ZONE 'Europe/Kyiv', 'YYYY') || '-'
                      || lpad(n, greatest(7, length(n)), '0');
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER cases_number BEFORE INSERT ON cases
    FOR EACH ROW EXECUTE FUNCTION cases_assign_number();

-- SR-02: a case's identity, creation time, channel and the contact as received never
-- change; its client never changes once set. The one allowed change of the client is an
-- anonymous case linked to a client (NULL -> a client), which the application does only
-- through the explicit, audited link action.
CREATE FUNCTION cases_refuse_metadata_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id IS DISTINCT FROM OLD.id OR NEW.number IS DISTINCT FROM OLD.number
       OR NEW.created_at IS DISTINCT FROM OLD.created_at OR NEW.channel IS DISTINCT FROM OLD.channel
       OR NEW.created_by IS DISTINCT FROM OLD.created_by
       OR NEW.created_by_login IS DISTINCT FROM OLD.created_by_login
       OR NEW.contact_name IS DISTINCT FROM OLD.contact_name
       OR NEW.contact_phone IS DISTINCT FROM OLD.contact_phone
       OR NEW.contact_email IS DISTINCT FROM OLD.contact_email
       OR NEW.contact_or IS DISTINCT FROM OLD.contact_or
       OR NEW.chat_ref IS DISTINCT FROM OLD.chat_ref
       OR NEW.body IS DISTINCT FROM OLD.body OR NEW.text_hash IS DISTINCT FROM OLD.text_hash THEN
        RAISE EXCEPTION 'case %: number, creation time, channel, author and the contact as received are immutable',
            OLD.number USING ERRCODE = 'restrict_violation';
    END IF;
    IF OLD.client_id IS NOT NULL AND (NEW.client_id IS DISTINCT FROM OLD.client_id
                                      OR NEW.account_id IS DISTINCT FROM OLD.account_id
                                      OR NEW.identified_by IS DISTINCT FROM OLD.identified_by) THEN
        RAISE EXCEPTION 'case %: the client is immutable once set', OLD.number
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER cases_immutable_metadata BEFORE UPDATE ON cases
    FOR EACH ROW EXECUTE FUNCTION cases_refuse_metadata_change();

-- Cases are never deleted by the application (merged ones are closed, not removed).
REVOKE DELETE, TRUNCATE ON cases FROM herald_app;

-- Everything that happens to a case, append-only: created, message (in/out), status,
-- assignment, classification (proposed vs chosen), client_link, flag, merge, note.
CREATE TABLE case_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    case_id     bigint NOT NULL REFERENCES cases,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind        text NOT NULL CHECK (kind IN ('created', 'message', 'status', 'assignment',
                                              'classification', 'client_link', 'flag', 'merge', 'note')),
    actor_id    bigint,
    actor_login text NOT NULL,
    channel     text,
    direction   text CHECK (direction IN ('in', 'out')),
    -- 'email:<Message-ID>', 'viber:<message token>', 'telegram:<chat>:<message>', 'call:<id>'...
    external_id text,
    from_status text,
    to_status   text,
    body        text,
    data        jsonb
);
CREATE INDEX case_events_case_idx ON case_events (case_id, id);
CREATE UNIQUE INDEX case_events_external_key ON case_events (external_id) WHERE external_id IS NOT NULL;

CREATE FUNCTION case_events_refuse_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'case_events is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER case_events_no_update_delete BEFORE UPDATE OR DELETE ON case_events
    FOR EACH ROW EXECUTE FUNCTION case_events_refuse_change();
REVOKE UPDATE, DELETE, TRUNCATE ON case_events FROM herald_app;
