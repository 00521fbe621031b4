-- Exports with no row limit (issue 16, SR-13): the background export jobs, who may see
-- everyone's exports, and the personal-data mask in SQL for exports streamed by COPY.
--
-- export_jobs: one row per export a user asked for. A small export streams straight to
-- the browser and is only recorded here (status 'streamed'); a large one is queued and
-- written to a file by the API process's export runner (admin_api/views/exports.py),
-- which claims it, reports progress and heartbeats into the row: a job whose runner
-- died (heartbeat older than a minute) is claimed again and written from scratch.
-- The file is kept until expires_at and then deleted ('expired').

CREATE TABLE export_jobs (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id       bigint NOT NULL REFERENCES users,
    owner_login    text NOT NULL,
    request_id     text,
    kind           text NOT NULL,
    format         text NOT NULL CHECK (format IN ('csv', 'xlsx')),
    filters        jsonb NOT NULL DEFAULT '{}',
    pii_visible    boolean NOT NULL DEFAULT false,
    status         text NOT NULL DEFAULT 'queued'
                   CHECK (status IN ('queued', 'running', 'done', 'failed', 'expired', 'streamed')),
    rows_estimate  bigint,
    rows_done      bigint NOT NULL DEFAULT 0,
    attempts       integer NOT NULL DEFAULT 0,
    file_name      text,
    file_size      bigint,
    error          text,
    created_at     timestamptz NOT NULL DEFAULT herald_now(),
    started_at     timestamptz,
    heartbeat_at   timestamptz,
    finished_at    timestamptz,
    expires_at     timestamptz
);
CREATE INDEX export_jobs_owner_idx ON export_jobs (owner_id, id DESC);
CREATE INDEX export_jobs_pending_idx ON export_jobs (id) WHERE status IN ('queued', 'running');
CREATE INDEX export_jobs_expiry_idx ON export_jobs (expires_at) WHERE status = 'done';

-- crm.pii.mask in SQL: all but the first two and last two characters (spaces dropped) hidden.
CREATE FUNCTION herald_pii_mask(value text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN value IS NULL THEN NULL
                      WHEN length(regexp_replace(value, '\s+', '', 'g')) <= 4
                      THEN repeat('*', length(regexp_replace(value, '\s+', '', 'g')))
                      ELSE left(regexp_replace(value, '\s+', '', 'g'), 2)
                           || repeat('*', length(regexp_replace(value, '\s+', '', 'g')) - 4)
                           || right(regexp_replace(value, '\s+', '', 'g'), 2) END $$;

-- crm.pii.mask_value in SQL: a journal value of a personal field masked, and the personal
-- fields of a whole record (a creation) masked one by one.
CREATE FUNCTION herald_pii_mask_json(field text, value jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF value IS NULL OR value = 'null'::jsonb THEN
        RETURN value;
    ELSIF field IN ('passport_number', 'tax_id') THEN
        IF jsonb_typeof(value) = 'string' THEN
            RETURN to_jsonb(herald_pii_mask(value #>> '{}'));
        END IF;
        RETURN '"****"'::jsonb;
    ELSIF jsonb_typeof(value) = 'object' THEN
        RETURN (SELECT coalesce(jsonb_object_agg(k, herald_pii_mask_json(k, v)), '{}'::jsonb)
                FROM jsonb_each(value) AS e(k, v));
    END IF;
    RETURN value;
END $$;

-- A text as the content of an XLSX cell (herald/exports.py builds the sheet XML in SQL):
-- XML's entities; newline, carriage return and tab as character references (so COPY's
-- text format escapes nothing but the backslash); the control characters XML 1.0 cannot
-- hold dropped (the CSV keeps them); past Excel's 32,767 characters cut with a mark.
-- One SELECT of its argument, so the planner inlines it; the rare cases (a control
-- character, a very long text) are guarded, as translate() on every cell was 10x slower.
CREATE FUNCTION herald_xlsx_text(value text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT replace(replace(replace(replace(replace(replace(
                 CASE WHEN value ~ E'[\\x01-\\x08\\x0b\\x0c\\x0e-\\x1f]'
                      THEN left(regexp_replace(value, E'[\\x01-\\x08\\x0b\\x0c\\x0e-\\x1f]', '', 'g'),
                                32767)
                      WHEN octet_length(value) > 32767 AND length(value) > 32767
                      THEN left(value, 32761) || '…[cut]'
                      ELSE value END,
                 '&', '&amp;'), '<', '&lt;'), '>', '&gt;'),
                 E'\n', '&#10;'), E'\r', '&#13;'), E'\t', '&#9;') $$;

INSERT INTO permissions (code, description_uk, description_en) VALUES
    ('exports.all', 'Бачити та завантажувати вивантаження всіх користувачів',
     'See and download every user''s exports');
INSERT INTO role_permissions (role_code, permission_code) VALUES ('admin', 'exports.all');
