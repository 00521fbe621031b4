-- SLA facts that re-planning must not lose (issue 20 point 1, SR-08/SR-09).
--
-- A breach that happened stays: the evaluator stamps the target's *_breached_at when it
-- records the breach, and from then on the target counts as breached for the case's state,
-- the supervisor's lists and the statistics, whatever deadline is planned afterwards (a
-- raised priority, a reclassification, a calendar or policy change). Before, raising the
-- priority re-planned the deadline into the future and the next check put the case back
-- to 'ok'.
--
-- A deadline a person set (PATCH /api/v1/cases/{id}/sla) is marked *_due_manual and a
-- re-plan keeps it (the journal of the change says who set it and why); only losing every
-- policy clears it. A target already done keeps its deadline too: whether it was met is
-- history, not something a later policy rewrites.

ALTER TABLE cases
    ADD COLUMN first_response_due_manual  boolean NOT NULL DEFAULT false,
    ADD COLUMN resolution_due_manual      boolean NOT NULL DEFAULT false,
    ADD COLUMN first_response_breached_at timestamptz,
    ADD COLUMN resolution_breached_at     timestamptz;

-- The backfills below rewrite one cases row per breach recorded so far (and per open
-- case with a deadline set by hand): on a database with a long history that is one row
-- write per breach, under the lock the columns above already took. The supervisors'
-- change feed is not told of each (a migration is not a live change; their screens
-- take the states on their next snapshot).
ALTER TABLE cases DISABLE TRIGGER cases_notify_change;

-- Breaches recorded so far; an open case among them is breached again (the bug may have
-- put it back to 'ok').
UPDATE cases c
SET first_response_breached_at = b.fr, resolution_breached_at = b.res,
    sla_state = CASE WHEN c.status <> 'closed' AND c.sla_policy_id IS NOT NULL THEN 'breached'
                     ELSE c.sla_state END
FROM (SELECT case_id, min(detected_at) FILTER (WHERE target = 'first_response') AS fr,
             min(detected_at) FILTER (WHERE target = 'resolution') AS res
      FROM case_sla_breaches GROUP BY case_id) b
WHERE c.id = b.case_id;

-- Deadlines set by hand on open cases (their 'deadline' events; one index probe per open
-- case, never a scan of all events).
UPDATE cases c
SET first_response_due_manual = EXISTS (
        SELECT 1 FROM case_events e WHERE e.case_id = c.id AND e.kind = 'deadline'
          AND e.data->>'target' = 'first_response'),
    resolution_due_manual = EXISTS (
        SELECT 1 FROM case_events e WHERE e.case_id = c.id AND e.kind = 'deadline'
          AND e.data->>'target' = 'resolution')
WHERE c.status <> 'closed'
  AND EXISTS (SELECT 1 FROM case_events e WHERE e.case_id = c.id AND e.kind = 'deadline');

ALTER TABLE cases ENABLE TRIGGER cases_notify_change;

-- A case's deadlines planned again from its current type, priority and category: the
-- policy that applies now; per target, a deadline set by hand or a target already done
-- keeps its deadline, any other gets the policy's. The state: 'none' without a policy
-- (unless a breach happened), 'ok' for a case that had none, else as it was (the
-- evaluator re-derives it at once). Used by the update trigger and by the re-plan after
-- a calendar or policy change (crm/cases/sla_replan.py), so both plan alike.
CREATE FUNCTION case_sla_replanned(c cases,
                                   OUT policy_id bigint, OUT fr_due timestamptz,
                                   OUT fr_warn timestamptz, OUT res_due timestamptz,
                                   OUT res_warn timestamptz, OUT fr_manual boolean,
                                   OUT res_manual boolean, OUT state text)
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    pl record;
BEGIN
    SELECT * INTO pl FROM case_sla_plan(c.case_type, c.priority, c.category_id, c.created_at,
                                        c.sla_paused_seconds);
    policy_id := pl.policy_id;
    IF pl.policy_id IS NULL THEN
        fr_manual := false;
        res_manual := false;
        state := CASE WHEN c.first_response_breached_at IS NOT NULL
                           OR c.resolution_breached_at IS NOT NULL THEN 'breached' ELSE 'none' END;
        RETURN;
    END IF;
    IF c.first_response_due_manual OR c.first_response_at IS NOT NULL THEN
        fr_due := c.first_response_due_at;
        fr_warn := c.first_response_warn_at;
        fr_manual := c.first_response_due_manual;
    ELSE
        fr_due := pl.fr_due;
        fr_warn := pl.fr_warn;
        fr_manual := false;
    END IF;
    IF c.resolution_due_manual OR c.resolved_at IS NOT NULL THEN
        res_due := c.resolution_due_at;
        res_warn := c.resolution_warn_at;
        res_manual := c.resolution_due_manual;
    ELSE
        res_due := pl.res_due;
        res_warn := pl.res_warn;
        res_manual := false;
    END IF;
    state := CASE WHEN c.sla_state = 'none' THEN 'ok' ELSE c.sla_state END;
END $$;

-- 0027's trigger function, its re-plan now case_sla_replanned.
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
        SELECT * INTO pl FROM case_sla_replanned(NEW);
        NEW.sla_policy_id := pl.policy_id;
        NEW.first_response_due_at := pl.fr_due;
        NEW.first_response_warn_at := pl.fr_warn;
        NEW.resolution_due_at := pl.res_due;
        NEW.resolution_warn_at := pl.res_warn;
        NEW.first_response_due_manual := pl.fr_manual;
        NEW.resolution_due_manual := pl.res_manual;
        NEW.sla_state := pl.state;
    END IF;
    RETURN NEW;
END $$;
