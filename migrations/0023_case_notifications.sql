-- Cases, issue 5 points 1 (operator replies) and 7 (client updates).
--
-- Operator replies by e-mail go through case_email_outbox: the row is written in the
-- request's transaction together with the case_events row (kind message, direction out,
-- external_id 'email:<Message-ID>'), handed to SMTP after commit, and retried by the
-- scheduler until SMTP accepts it or refuses it for good. A send claims its row with a
-- lease (next_attempt_at moved forward), so two senders never hold one row at once.
--
-- Replies by SMS/Viber and client updates go through the realtime path
-- (realtime_messages): their free text and the case's details are carried in the new
-- column realtime_messages.variables, merged into the client's template variables when
-- the worker renders the pinned template version.
--
-- Client updates are derived from case_events: an insert trigger enqueues every event a
-- rule may react to (created, status, deadline, info_request, outgoing message) into
-- case_notify_queue in the inserting transaction, whatever code path wrote it (API,
-- automations, escalations, the SLA evaluator). A scheduler duty takes queued events,
-- matches the active rules and makes one realtime message per (event, rule); the
-- primary key of case_notifications makes a re-run a no-op, and the queue row is deleted
-- in the same transaction. A queue (instead of a cursor over case_events ids) cannot
-- skip an event whose transaction committed after a later id's did.

ALTER TABLE realtime_messages ADD COLUMN variables jsonb;

CREATE TABLE case_email_outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    case_id         bigint NOT NULL REFERENCES cases,
    -- Herald's id of the message: the Message-ID header is '<message_id@herald>'.
    message_id      text NOT NULL CHECK (message_id ~ '^[A-Za-z0-9.-]{1,100}$'),
    address         text NOT NULL,
    subject         text NOT NULL,
    body            text NOT NULL,
    in_reply_to     text,
    refs            text[] NOT NULL DEFAULT '{}',
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    provider_id     text,
    created_by      bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz
);
CREATE UNIQUE INDEX case_email_outbox_message_key ON case_email_outbox (message_id);
CREATE INDEX case_email_outbox_due_idx ON case_email_outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX case_email_outbox_case_idx ON case_email_outbox (case_id, id);

-- Client updates: a kind of case event (and for status_changed, optionally the status
-- reached) -> a pinned template version and a channel chain.
CREATE TABLE case_notification_rules (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    event            text NOT NULL CHECK (event IN ('case_registered', 'status_changed',
                                                    'answer_given', 'deadline_changed',
                                                    'info_needed')),
    to_status        text REFERENCES case_statuses,
    template_id      bigint NOT NULL,
    template_version integer NOT NULL,
    channel_chain    text[] NOT NULL DEFAULT '{viber,sms}'
                     CHECK (cardinality(channel_chain) BETWEEN 1 AND 2
                            AND channel_chain <@ ARRAY['viber', 'sms']),
    is_active        boolean NOT NULL DEFAULT true,
    created_by       bigint,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (template_id, template_version) REFERENCES message_template_versions,
    CHECK (to_status IS NULL OR event = 'status_changed')
);
CREATE INDEX case_notification_rules_event_idx ON case_notification_rules (event) WHERE is_active;

CREATE TABLE case_notify_queue (
    event_id bigint PRIMARY KEY
);

-- One row per (case event, rule) handled: sent (message_id) or skipped (reason).
CREATE TABLE case_notifications (
    event_id    bigint NOT NULL,
    rule_id     bigint NOT NULL REFERENCES case_notification_rules,
    case_id     bigint NOT NULL REFERENCES cases,
    message_id  text,
    skipped     text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, rule_id)
);
CREATE INDEX case_notifications_case_idx ON case_notifications (case_id);

-- Events written long after they happened (bulk loads of history, benchmarks) are
-- never notified: only an event recorded as happening in the last hour is queued.
CREATE FUNCTION case_events_enqueue_notify() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO case_notify_queue (event_id) VALUES (NEW.id) ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER case_events_enqueue_notify AFTER INSERT ON case_events
    FOR EACH ROW
    WHEN (NEW.at > now() - interval '1 hour'
          AND (NEW.kind IN ('created', 'status', 'deadline', 'info_request')
               OR (NEW.kind = 'message' AND NEW.direction = 'out')))
    EXECUTE FUNCTION case_events_enqueue_notify();

-- The templates of replies and of the default rules (Ukrainian, topic case_status).
CREATE TABLE case_message_settings (
    id                boolean PRIMARY KEY DEFAULT true CHECK (id),
    reply_template_id bigint NOT NULL REFERENCES message_templates
);

DO $$
DECLARE
    t bigint;
BEGIN
    INSERT INTO message_templates (name, topic) VALUES ('Відповідь на звернення', 'case_status')
        RETURNING id INTO t;
    INSERT INTO message_template_versions (template_id, version, language, variants) VALUES
        (t, 1, 'uk', '{"sms": {"text": "{{ case_number }}: {{ case_text }}"},
                       "viber": {"text": "Звернення {{ case_number }}\n{{ case_text }}"}}');
    INSERT INTO case_message_settings (reply_template_id) VALUES (t);

    INSERT INTO message_templates (name, topic) VALUES ('Звернення зареєстровано', 'case_status')
        RETURNING id INTO t;
    INSERT INTO message_template_versions (template_id, version, language, variants) VALUES
        (t, 1, 'uk', '{"sms": {"text": "Ваше звернення {{ case_number }} зареєстровано. Категорія: {{ case_category }}."},
                       "viber": {"text": "{{ first_name }}, ваше звернення {{ case_number }} зареєстровано. Категорія: {{ case_category }}. Ми повідомимо про зміни."}}');
    INSERT INTO case_notification_rules (name, event, template_id, template_version)
        VALUES ('Звернення зареєстровано', 'case_registered', t, 1);

    INSERT INTO message_templates (name, topic) VALUES ('Звернення вирішено', 'case_status')
        RETURNING id INTO t;
    INSERT INTO message_template_versions (template_id, version, language, variants) VALUES
        (t, 1, 'uk', '{"sms": {"text": "Звернення {{ case_number }}: статус «{{ case_status }}»."},
                       "viber": {"text": "{{ first_name }}, ваше звернення {{ case_number }} має статус «{{ case_status }}». Дякуємо за звернення!"}}');
    INSERT INTO case_notification_rules (name, event, to_status, template_id, template_version)
        VALUES ('Звернення вирішено', 'status_changed', 'resolved', t, 1);

    INSERT INTO message_templates (name, topic) VALUES ('Потрібна інформація', 'case_status')
        RETURNING id INTO t;
    INSERT INTO message_template_versions (template_id, version, language, variants) VALUES
        (t, 1, 'uk', '{"sms": {"text": "Звернення {{ case_number }}: {{ case_text }}"},
                       "viber": {"text": "Звернення {{ case_number }}. Потрібна додаткова інформація:\n{{ case_text }}"}}');
    INSERT INTO case_notification_rules (name, event, template_id, template_version)
        VALUES ('Потрібна інформація', 'info_needed', t, 1);

    -- Offered, inactive: an administrator switches them on.
    INSERT INTO message_templates (name, topic) VALUES ('Змінено строк звернення', 'case_status')
        RETURNING id INTO t;
    INSERT INTO message_template_versions (template_id, version, language, variants) VALUES
        (t, 1, 'uk', '{"sms": {"text": "Звернення {{ case_number }}: новий строк розгляду {{ case_deadline }}."},
                       "viber": {"text": "{{ first_name }}, строк розгляду звернення {{ case_number }}: {{ case_deadline }}."}}');
    INSERT INTO case_notification_rules (name, event, template_id, template_version, is_active)
        VALUES ('Змінено строк звернення', 'deadline_changed', t, 1, false);

    INSERT INTO message_templates (name, topic) VALUES ('Статус звернення змінено', 'case_status')
        RETURNING id INTO t;
    INSERT INTO message_template_versions (template_id, version, language, variants) VALUES
        (t, 1, 'uk', '{"sms": {"text": "Звернення {{ case_number }}: статус «{{ case_status }}»."},
                       "viber": {"text": "{{ first_name }}, звернення {{ case_number }} має статус «{{ case_status }}»."}}');
    INSERT INTO case_notification_rules (name, event, template_id, template_version, is_active)
        VALUES ('Статус звернення змінено', 'status_changed', t, 1, false);

    INSERT INTO message_templates (name, topic) VALUES ('Надано відповідь', 'case_status')
        RETURNING id INTO t;
    INSERT INTO message_template_versions (template_id, version, language, variants) VALUES
        (t, 1, 'uk', '{"sms": {"text": "На звернення {{ case_number }} надано відповідь."},
                       "viber": {"text": "{{ first_name }}, на звернення {{ case_number }} надано відповідь: {{ case_text }}"}}');
    INSERT INTO case_notification_rules (name, event, template_id, template_version, is_active)
        VALUES ('Надано відповідь', 'answer_given', t, 1, false);
END $$;
