-- Template languages and consent management (issue 6, points 2 and 3).
--
-- clients has 13 M rows: the language column is added without a default (a catalogue
-- change only, no rewrite) and its CHECK as NOT VALID, so that the ALTER does not scan
-- the table under its exclusive lock; every existing row is NULL, which the CHECK
-- allows anyway, and new or updated rows are checked.

-- The language a client reads messages in; NULL: Ukrainian.
ALTER TABLE clients ADD COLUMN language text;
ALTER TABLE clients ADD CONSTRAINT clients_language_check
    CHECK (language IN ('uk', 'en')) NOT VALID;

-- Whether an SMS "STOP" reply opts the sender out of this topic on SMS. Service notices
-- (gas shut-offs, maintenance, safety) keep reaching a number that replied STOP; an
-- operator can still record an explicit opt-out from them at the client's request.
ALTER TABLE message_topics ADD COLUMN stop_reply boolean NOT NULL DEFAULT true;
UPDATE message_topics SET stop_reply = false WHERE code = 'service';

-- Every change of a consent, as the client card shows it: who (a user, an integration
-- user, or a system actor such as the SMS gateway or the unsubscribe link), when, from
-- where, the explicit state before (NULL: the topic default applied) and after. Written
-- in the statement that changes `consents`; append-only, like the audit journal that
-- records the same change. No foreign key: the log outlives what it talks about.
CREATE TABLE consent_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    client_id    bigint NOT NULL,
    channel      text NOT NULL,
    topic        text NOT NULL,
    old_opted_in boolean,
    new_opted_in boolean NOT NULL,
    source       text NOT NULL CHECK (source IN
                     ('cabinet', 'app', 'chatbot', 'operator', 'import', 'sms_stop',
                      'email_unsubscribe', 'contract')),
    actor_id     bigint,
    actor_login  text NOT NULL,
    request_id   text,
    -- Context of a system change, e.g. the phone and text of an SMS STOP reply.
    detail       jsonb
);
CREATE INDEX consent_log_client_idx ON consent_log (client_id, id DESC);

REVOKE UPDATE, DELETE, TRUNCATE ON consent_log FROM herald_app;

CREATE FUNCTION consent_log_refuse_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'consent_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER consent_log_no_update_delete
    BEFORE UPDATE OR DELETE ON consent_log
    FOR EACH ROW EXECUTE FUNCTION consent_log_refuse_change();
CREATE TRIGGER consent_log_no_truncate
    BEFORE TRUNCATE ON consent_log
    FOR EACH STATEMENT EXECUTE FUNCTION consent_log_refuse_change();

-- Every SMS a client sent to Herald's numbers (POST /api/v1/providers/sms/inbound) and
-- what it did; the provider's message id makes a re-posted message a no-op.
CREATE TABLE sms_inbound (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at         timestamptz NOT NULL DEFAULT now(),
    phone               text NOT NULL,
    text                text NOT NULL,
    provider_message_id text,
    action              text NOT NULL CHECK (action IN ('opted_out', 'ignored', 'unknown_number')),
    clients             bigint[] NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX sms_inbound_provider_id_key ON sms_inbound (provider_message_id)
    WHERE provider_message_id IS NOT NULL;
CREATE INDEX sms_inbound_phone_idx ON sms_inbound (phone, received_at DESC);

-- The personal cabinet, the mobile app and the chatbot record the choices a client makes
-- there (source cabinet, app, chatbot), logging in as users of the role 'integration'.
INSERT INTO permissions (code, description_uk, description_en) VALUES
    ('consents.client', 'Записувати згоди, які клієнт змінив у кабінеті, застосунку чи чат-боті',
                        'Record consents a client changed in the cabinet, app or chatbot');

INSERT INTO role_permissions (role_code, permission_code) VALUES
    ('integration', 'consents.client'), ('admin', 'consents.client');
