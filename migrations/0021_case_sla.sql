-- Cases, issue 5 points 5 and 9: business calendars, SLA policies, per-case deadlines,
-- the evaluator's warnings and breaches, escalation rules and what they did.
--
-- Deadlines are kept right by triggers on cases and case_events, whatever code path
-- changes a case (intake, transitions, the idle automation, merges, corrections,
-- escalations, a bulk UPDATE): the application code of those paths needs no SLA calls.
-- The triggers do business-time sums in SQL over each calendar's working spans, which
-- crm/cases/calendars.py materialises (UTC instants, DST resolved in Python) with the
-- running total of working seconds, so that "add N working seconds" is one index probe.
--
-- Time of a status change is the row's status_changed_at (every path sets it to now()).

-- -- calendars ------------------------------------------------------------------------------

CREATE TABLE business_calendars (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    time_zone    text NOT NULL DEFAULT 'Europe/Kyiv',
    -- {"mon": [{"start": "08:00", "end": "17:00"}], ...}; validated by the application.
    week         jsonb NOT NULL,
    -- [{"date": "2026-12-25", "name": "...", "hours": []}]; hours [] = a day off.
    holidays     jsonb NOT NULL DEFAULT '[]',
    -- The local days whose spans are materialised (extended by the scheduler).
    horizon_from date NOT NULL,
    horizon_to   date NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (horizon_from <= horizon_to)
);
CREATE UNIQUE INDEX business_calendars_name_key ON business_calendars (name);

CREATE TABLE business_calendar_spans (
    calendar_id bigint NOT NULL REFERENCES business_calendars ON DELETE CASCADE,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    -- Working seconds of the calendar from its horizon start to starts_at / ends_at.
    cum_start   double precision NOT NULL,
    cum_end     double precision NOT NULL,
    PRIMARY KEY (calendar_id, starts_at),
    CHECK (ends_at > starts_at AND cum_end > cum_start)
);
CREATE INDEX business_calendar_spans_cum_idx ON business_calendar_spans (calendar_id, cum_end);

-- Working seconds from the horizon start to t (a time beyond the horizon counts as its end).
CREATE FUNCTION business_cum(cal bigint, t timestamptz) RETURNS double precision
    LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce((
        SELECT s.cum_start + extract(epoch FROM least(t, s.ends_at) - s.starts_at)::double precision
        FROM business_calendar_spans s
        WHERE s.calendar_id = cal AND s.starts_at <= t
        ORDER BY s.starts_at DESC LIMIT 1), 0)
$$;

-- The instant at which the running total reaches cum; NULL beyond the horizon.
CREATE FUNCTION business_instant(cal bigint, cum double precision) RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT s.starts_at + make_interval(secs => greatest(cum - s.cum_start, 0))
    FROM business_calendar_spans s
    WHERE s.calendar_id = cal AND s.cum_end >= cum
    ORDER BY s.cum_end LIMIT 1
$$;

CREATE FUNCTION business_add(cal bigint, t timestamptz, secs double precision) RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN secs <= 0 THEN t ELSE business_instant(cal, business_cum(cal, t) + secs) END
$$;

CREATE FUNCTION business_between(cal bigint, a timestamptz, b timestamptz) RETURNS double precision
    LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT business_cum(cal, b) - business_cum(cal, a)
$$;

-- -- policies and escalation rules ----------------------------------------------------------

-- A policy applies to a case when each of its given case_type / priority / category_id
-- equals the case's (NULL = any). The most specific wins: most fields given, then
-- category before type before priority, then the lowest id (case_sla_plan below).
CREATE TABLE case_sla_policies (
    id                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                   text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    is_active              boolean NOT NULL DEFAULT true,
    case_type              text CHECK (case_type IN ('technical', 'financial', 'informational')),
    priority               text CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    category_id            bigint REFERENCES case_categories,
    calendar_id            bigint NOT NULL REFERENCES business_calendars,
    first_response_minutes integer CHECK (first_response_minutes BETWEEN 1 AND 525600),
    resolution_minutes     integer CHECK (resolution_minutes BETWEEN 1 AND 5256000),
    warning_percent        smallint NOT NULL DEFAULT 80 CHECK (warning_percent BETWEEN 1 AND 99),
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CHECK (first_response_minutes IS NOT NULL OR resolution_minutes IS NOT NULL)
);
CREATE UNIQUE INDEX case_sla_policies_scope_key ON case_sla_policies (case_type, priority, category_id)
    NULLS NOT DISTINCT;

CREATE TABLE case_escalation_rules (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name               text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    is_active          boolean NOT NULL DEFAULT true,
    on_level           text NOT NULL CHECK (on_level IN ('warning', 'breached')),
    target             text CHECK (target IN ('first_response', 'resolution')),  -- NULL: either
    case_type          text CHECK (case_type IN ('technical', 'financial', 'informational')),
    priority           text CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    category_id        bigint REFERENCES case_categories,
    group_code         text,
    notify_supervisors boolean NOT NULL DEFAULT false,
    -- 'step': one level up (low -> normal -> high -> urgent); or the level to raise to.
    raise_priority     text CHECK (raise_priority IN ('step', 'normal', 'high', 'urgent')),
    reassign_group     text CHECK (length(reassign_group) BETWEEN 1 AND 100),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (notify_supervisors OR raise_priority IS NOT NULL OR reassign_group IS NOT NULL)
);

-- -- per-case SLA ---------------------------------------------------------------------------

ALTER TABLE cases
    ADD COLUMN sla_policy_id            bigint,
    ADD COLUMN first_response_due_at    timestamptz,
    ADD COLUMN resolution_due_at        timestamptz,
    ADD COLUMN first_response_at        timestamptz,
    ADD COLUMN resolved_at              timestamptz,
    ADD COLUMN sla_state                text NOT NULL DEFAULT 'none'
        CHECK (sla_state IN ('none', 'ok', 'warning', 'breached')),
    ADD COLUMN sla_paused_at            timestamptz,
    ADD COLUMN sla_next_check_at        timestamptz,
    -- When each target reaches its warning threshold (the evaluator compares times only).
    ADD COLUMN first_response_warn_at   timestamptz,
    ADD COLUMN resolution_warn_at       timestamptz,
    -- Working seconds spent On Hold in finished pauses (a reclassification replans with it).
    ADD COLUMN sla_paused_seconds       double precision NOT NULL DEFAULT 0,
    -- Times the case left Resolved for an open status (first-contact resolution needs 0).
    ADD COLUMN reopen_count             integer NOT NULL DEFAULT 0;

-- The evaluator takes due cases by this index only.
CREATE INDEX cases_sla_next_check_idx ON cases (sla_next_check_at)
    WHERE status <> 'closed' AND sla_next_check_at IS NOT NULL;
-- The queue's sla_state filter (open cases).
CREATE INDEX cases_sla_state_idx ON cases (sla_state, created_at, id) WHERE status <> 'closed';
-- Statistics: FCR looks for a later repeat of a case.
CREATE INDEX cases_repeat_of_idx ON cases (repeat_of_id) WHERE repeat_of_id IS NOT NULL;

-- The policy that applies and its deadlines for a case created at p_created that has
-- spent p_paused working seconds On Hold.
CREATE FUNCTION case_sla_plan(p_type text, p_priority text, p_category bigint,
                              p_created timestamptz, p_paused double precision,
                              OUT policy_id bigint, OUT fr_due timestamptz, OUT fr_warn timestamptz,
                              OUT res_due timestamptz, OUT res_warn timestamptz)
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    p    case_sla_policies;
    base double precision;
BEGIN
    SELECT * INTO p FROM case_sla_policies sp
    WHERE sp.is_active
      AND (sp.case_type IS NULL OR sp.case_type = p_type)
      AND (sp.priority IS NULL OR sp.priority = p_priority)
      AND (sp.category_id IS NULL OR sp.category_id = p_category)
    ORDER BY (sp.category_id IS NOT NULL)::int + (sp.case_type IS NOT NULL)::int
             + (sp.priority IS NOT NULL)::int DESC,
             sp.category_id IS NOT NULL DESC, sp.case_type IS NOT NULL DESC, sp.id
    LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    policy_id := p.id;
    base := business_cum(p.calendar_id, p_created) + p_paused;
    IF p.first_response_minutes IS NOT NULL THEN
        fr_due := business_instant(p.calendar_id, base + p.first_response_minutes * 60.0);
        fr_warn := business_instant(p.calendar_id,
                                    base + p.first_response_minutes * 0.6 * p.warning_percent);
    END IF;
    IF p.resolution_minutes IS NOT NULL THEN
        res_due := business_instant(p.calendar_id, base + p.resolution_minutes * 60.0);
        res_warn := business_instant(p.calendar_id,
                                     base + p.resolution_minutes * 0.6 * p.warning_percent);
    END IF;
END $$;

-- The warning time of a deadline set by hand: the same share of the target left.
CREATE FUNCTION case_sla_warn_for(p_policy bigint, p_target text, p_due timestamptz)
    RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT business_instant(p.calendar_id, business_cum(p.calendar_id, p_due)
           - (CASE p_target WHEN 'first_response' THEN p.first_response_minutes
                            ELSE p.resolution_minutes END) * 0.6 * (100 - p.warning_percent))
    FROM case_sla_policies p WHERE p.id = p_policy
$$;

CREATE FUNCTION cases_sla_on_insert() RETURNS trigger
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
        NEW.sla_next_check_at := CASE WHEN NEW.sla_paused_at IS NOT NULL THEN now()
                                      ELSE least(pl.fr_warn, pl.res_warn) END;
    END IF;
    RETURN NEW;
END $$;

-- Closed cases inserted by a loader skip the trigger (no SLA is evaluated for them).
CREATE TRIGGER cases_sla_insert BEFORE INSERT ON cases
    FOR EACH ROW WHEN (NEW.status <> 'closed') EXECUTE FUNCTION cases_sla_on_insert();

CREATE FUNCTION cases_sla_on_update() RETURNS trigger
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
    -- The evaluator re-derives the state (and the next check) from the new facts.
    NEW.sla_next_check_at := CASE WHEN NEW.status = 'closed' OR NEW.sla_policy_id IS NULL THEN NULL
                                  ELSE now() END;
    RETURN NEW;
END $$;

CREATE TRIGGER cases_sla_update BEFORE UPDATE ON cases
    FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status
                       OR NEW.case_type IS DISTINCT FROM OLD.case_type
                       OR NEW.priority IS DISTINCT FROM OLD.priority
                       OR NEW.category_id IS DISTINCT FROM OLD.category_id)
    EXECUTE FUNCTION cases_sla_on_update();

-- The first outbound message to the client is a first response (if nothing came first).
CREATE FUNCTION case_events_sla_first_response() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    UPDATE cases
    SET first_response_at = NEW.at,
        sla_next_check_at = CASE WHEN status = 'closed' OR sla_policy_id IS NULL
                                 THEN sla_next_check_at ELSE now() END
    WHERE id = NEW.case_id AND first_response_at IS NULL;
    RETURN NULL;
END $$;

CREATE TRIGGER case_events_sla_first_response AFTER INSERT ON case_events
    FOR EACH ROW WHEN (NEW.kind = 'message' AND NEW.direction = 'out')
    EXECUTE FUNCTION case_events_sla_first_response();

-- -- what the evaluator found and did -------------------------------------------------------

CREATE TABLE case_sla_warnings (
    case_id   bigint NOT NULL REFERENCES cases,
    target    text NOT NULL CHECK (target IN ('first_response', 'resolution')),
    due_at    timestamptz NOT NULL,
    warned_at timestamptz NOT NULL,
    PRIMARY KEY (case_id, target, due_at)
);

-- Every breach, for reports: one per case and target (a deadline moved later and missed
-- again is the same breach). The case's attributes are as when it was detected.
CREATE TABLE case_sla_breaches (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    case_id     bigint NOT NULL REFERENCES cases,
    target      text NOT NULL CHECK (target IN ('first_response', 'resolution')),
    due_at      timestamptz NOT NULL,
    detected_at timestamptz NOT NULL,
    policy_id   bigint,
    channel     text NOT NULL,
    case_type   text,
    priority    text NOT NULL,
    category_id bigint,
    group_code  text,
    assignee_id bigint,
    UNIQUE (case_id, target)
);
CREATE INDEX case_sla_breaches_due_idx ON case_sla_breaches (due_at);

-- What escalation rules did: the supervisor's live view shows these. Once per case,
-- rule, target and level.
CREATE TABLE case_escalations (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    case_id bigint NOT NULL REFERENCES cases,
    rule_id bigint NOT NULL REFERENCES case_escalation_rules,
    target  text NOT NULL CHECK (target IN ('first_response', 'resolution')),
    level   text NOT NULL CHECK (level IN ('warning', 'breached')),
    at      timestamptz NOT NULL,
    notify_supervisors boolean NOT NULL,
    actions jsonb NOT NULL,
    UNIQUE (case_id, rule_id, target, level)
);
CREATE INDEX case_escalations_at_idx ON case_escalations (at DESC);
CREATE INDEX case_escalations_notify_idx ON case_escalations (at DESC) WHERE notify_supervisors;

REVOKE UPDATE, DELETE, TRUNCATE ON case_sla_breaches, case_escalations FROM herald_app;
