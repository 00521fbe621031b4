-- The SLA evaluator's schedule in a narrow table of its own (issue 5 point 5, benchmark).
--
-- cases.sla_next_check_at moved every evaluated case row, and a cases row has ~20
-- indexes: each check rewrote an entry in every one of them even when the SLA state stayed
-- the same. A row here is the next check of an open case with a policy (no row: nothing to
-- check); the evaluator moves these rows and updates cases only when a case's state changes.
-- The triggers of 0021 keep scheduling as before, into this table instead of the column.

-- Every check rewrites its row (next_check_at is indexed, so never HOT): vacuumed after a
-- fixed number of dead rows rather than a share of a table this small.
CREATE TABLE case_sla_checks (
    case_id       bigint PRIMARY KEY REFERENCES cases ON DELETE CASCADE,
    next_check_at timestamptz NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 20000,
        autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 20000);
CREATE INDEX case_sla_checks_due_idx ON case_sla_checks (next_check_at);

INSERT INTO case_sla_checks (case_id, next_check_at)
SELECT id, sla_next_check_at FROM cases
WHERE status <> 'closed' AND sla_next_check_at IS NOT NULL;

-- Check now (the evaluator re-derives the state from the new facts), or never again.
CREATE FUNCTION case_sla_check_now(p_case bigint, p_check boolean) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    IF p_check THEN
        INSERT INTO case_sla_checks (case_id, next_check_at) VALUES (p_case, now())
        ON CONFLICT (case_id) DO UPDATE SET next_check_at = excluded.next_check_at;
    ELSE
        DELETE FROM case_sla_checks WHERE case_id = p_case;
    END IF;
END $$;

CREATE OR REPLACE FUNCTION cases_sla_on_insert() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    pl record;
BEGIN
    IF NEW.status <> 'new' THEN
        NEW.first_response_at := coalesce(NEW.first_response_at, NEW.status_changed_at);
    END IF;
    IF NEW.status = 'resolved' THEN
        NEW.resolved_at := coalesce(NEW.resolved_at, NEW.status_changed_at);
    ELSIF NEW.status = 'on_hold' THEN
        NEW.sla_paused_at := coalesce(NEW.sla_paused_at, NEW.status_changed_at);
    END IF;
    -- A loader that sets the SLA columns itself (historical data) keeps them.
    IF NEW.sla_policy_id IS NOT NULL OR NEW.sla_state <> 'none' THEN
        RETURN NEW;
    END IF;
    SELECT * INTO pl FROM case_sla_plan(NEW.case_type, NEW.priority, NEW.category_id,
                                        NEW.created_at, 0);
    IF pl.policy_id IS NOT NULL THEN
        NEW.sla_policy_id := pl.policy_id;
        NEW.first_response_due_at := pl.fr_due;
        NEW.first_response_warn_at := pl.fr_warn;
        NEW.resolution_due_at := pl.res_due;
        NEW.resolution_warn_at := pl.res_warn;
        NEW.sla_state := 'ok';
    END IF;
    RETURN NEW;
END $$;

-- The first check of a new case (the row exists only after the insert): at the first
-- warning time, or at once when it starts On Hold.
CREATE FUNCTION cases_sla_schedule_insert() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    at timestamptz := CASE WHEN NEW.sla_paused_at IS NOT NULL THEN now()
                           ELSE least(NEW.first_response_warn_at, NEW.resolution_warn_at) END;
BEGIN
    IF at IS NOT NULL THEN
        INSERT INTO case_sla_checks (case_id, next_check_at) VALUES (NEW.id, at)
        ON CONFLICT (case_id) DO UPDATE SET next_check_at = excluded.next_check_at;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER cases_sla_schedule_insert AFTER INSERT ON cases
    FOR EACH ROW WHEN (NEW.status <> 'closed' AND NEW.sla_policy_id IS NOT NULL)
    EXECUTE FUNCTION cases_sla_schedule_insert();

CREATE OR REPLACE FUNCTION cases_sla_on_update() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    t    timestamptz := NEW.status_changed_at;
    cal  bigint;
    held double precision;
    pl   record;
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        IF OLD.status = 'new' THEN
            NEW.first_response_at := coalesce(NEW.first_response_at, t);
        END IF;
        IF NEW.status = 'resolved' THEN
            NEW.resolved_at := t;
        ELSIF OLD.status = 'resolved' AND NEW.status <> 'closed' THEN
            NEW.resolved_at := NULL;
            NEW.reopen_count := NEW.reopen_count + 1;
        END IF;
        IF NEW.status = 'on_hold' THEN
            NEW.sla_paused_at := coalesce(NEW.sla_paused_at, t);
        ELSIF NEW.sla_paused_at IS NOT NULL THEN
            -- Leaving On Hold: open deadlines move by the working time spent on hold.
            IF NEW.sla_policy_id IS NOT NULL AND NEW.status <> 'closed' THEN
                SELECT calendar_id INTO cal FROM case_sla_policies WHERE id = NEW.sla_policy_id;
                held := CASE WHEN cal IS NULL THEN 0
                             ELSE greatest(business_between(cal, NEW.sla_paused_at, t), 0) END;
                NEW.sla_paused_seconds := NEW.sla_paused_seconds + held;
                IF held > 0 THEN
                    IF NEW.first_response_at IS NULL AND NEW.first_response_due_at > NEW.sla_paused_at THEN
                        NEW.first_response_due_at := business_instant(cal,
                            business_cum(cal, NEW.first_response_due_at) + held);
                        IF NEW.first_response_warn_at > NEW.sla_paused_at THEN
                            NEW.first_response_warn_at := business_instant(cal,
                                business_cum(cal, NEW.first_response_warn_at) + held);
                        END IF;
                    END IF;
                    IF NEW.resolved_at IS NULL AND NEW.resolution_due_at > NEW.sla_paused_at THEN
                        NEW.resolution_due_at := business_instant(cal,
                            business_cum(cal, NEW.resolution_due_at) + held);
                        IF NEW.resolution_warn_at > NEW.sla_paused_at THEN
                            NEW.resolution_warn_at := business_instant(cal,
                                business_cum(cal, NEW.resolution_warn_at) + held);
                        END IF;
                    END IF;
                END IF;
            END IF;
            NEW.sla_paused_at := NULL;
        END IF;
    END IF;
    IF (NEW.case_type IS DISTINCT FROM OLD.case_type OR NEW.priority IS DISTINCT FROM OLD.priority
        OR NEW.category_id IS DISTINCT FROM OLD.category_id) AND NEW.status <> 'closed' THEN
        SELECT * INTO pl FROM case_sla_plan(NEW.case_type, NEW.priority, NEW.category_id,
                                            NEW.created_at, NEW.sla_paused_seconds);
        NEW.sla_policy_id := pl.policy_id;
        NEW.first_response_due_at := pl.fr_due;
        NEW.first_response_warn_at := pl.fr_warn;
        NEW.resolution_due_at := pl.res_due;
        NEW.resolution_warn_at := pl.res_warn;
        IF pl.policy_id IS NULL THEN
            NEW.sla_state := 'none';
        ELSIF NEW.sla_state = 'none' THEN
            NEW.sla_state := 'ok';
        END IF;
    END IF;
    RETURN NEW;
END $$;

-- The evaluator re-derives the state (and the next check) from the new facts; after the
-- update, so that what the BEFORE trigger decided (closed, policy) is what counts.
CREATE FUNCTION cases_sla_schedule_update() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM case_sla_check_now(NEW.id, NEW.status <> 'closed' AND NEW.sla_policy_id IS NOT NULL);
    RETURN NULL;
END $$;

CREATE TRIGGER cases_sla_schedule_update AFTER UPDATE ON cases
    FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status
                       OR NEW.case_type IS DISTINCT FROM OLD.case_type
                       OR NEW.priority IS DISTINCT FROM OLD.priority
                       OR NEW.category_id IS DISTINCT FROM OLD.category_id)
    EXECUTE FUNCTION cases_sla_schedule_update();

CREATE OR REPLACE FUNCTION case_events_sla_first_response() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    st  text;
    pol bigint;
BEGIN
    UPDATE cases SET first_response_at = NEW.at
    WHERE id = NEW.case_id AND first_response_at IS NULL
    RETURNING status, sla_policy_id INTO st, pol;
    IF FOUND AND st <> 'closed' AND pol IS NOT NULL THEN
        PERFORM case_sla_check_now(NEW.case_id, true);
    END IF;
    RETURN NULL;
END $$;

DROP INDEX cases_sla_next_check_idx;
ALTER TABLE cases DROP COLUMN sla_next_check_at;
