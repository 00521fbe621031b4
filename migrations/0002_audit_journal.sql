-- The audit journal: append-only, written in the same transaction as the change it records.
--
-- Immutability is enforced twice by the database: herald_app holds only SELECT and
-- INSERT on it (UPDATE, DELETE, TRUNCATE are denied by privilege), and triggers refuse
-- UPDATE, DELETE and TRUNCATE for every role, the owner included. Retention (5 years,
-- NF-10) works by detaching and dropping whole yearly partitions, which these row
-- triggers do not block.
CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor_id    bigint,
    actor_login text NOT NULL,
    action      text NOT NULL CHECK (action ~ '^[a-z][a-z_]{1,40}$'),
    entity_type text NOT NULL CHECK (entity_type ~ '^[a-z][a-z_]{1,40}$'),
    entity_id   text NOT NULL,
    field       text,
    old_value   jsonb,
    new_value   jsonb,
    request_id  text,
    PRIMARY KEY (at, id)
) PARTITION BY RANGE (at);

CREATE INDEX audit_log_entity_idx ON audit_log (entity_type, entity_id, at DESC, id DESC);
CREATE INDEX audit_log_actor_idx ON audit_log (actor_id, at DESC);

-- Creates yearly partitions from the given year for `years` years; safe to call again.
-- Each partition is a table of its own, which the default privileges of 0001 would open
-- to herald_app: take them away, so the journal cannot be changed through a partition.
CREATE FUNCTION audit_log_ensure_partitions(from_year integer, years integer) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    y integer;
BEGIN
    FOR y IN from_year .. from_year + years - 1 LOOP
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I PARTITION OF audit_log FOR VALUES FROM (%L) TO (%L)',
            'audit_log_y' || y, make_date(y, 1, 1), make_date(y + 1, 1, 1));
        EXECUTE format('REVOKE ALL ON %I FROM herald_app', 'audit_log_y' || y);
    END LOOP;
END $$;

SELECT audit_log_ensure_partitions(2024, 10);
-- Rows outside every yearly partition still land somewhere: never lose an audit entry.
CREATE TABLE audit_log_default PARTITION OF audit_log DEFAULT;
REVOKE ALL ON audit_log_default FROM herald_app;

CREATE FUNCTION audit_log_refuse_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER audit_log_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();

REVOKE ALL ON audit_log FROM herald_app;
GRANT SELECT, INSERT ON audit_log TO herald_app;
