-- Reports read incrementally maintained aggregates, never a scan of all cases or messages
-- (issue 16). Two feeds, both driven by the writes themselves:
--
-- * Cases change after the fact (reclassified, reassigned, reopened, a repeat found), so
--   a case's contribution cannot simply be added once. Every INSERT or UPDATE of cases
--   marks the UTC hours its times fall in (creation, first response, resolution, the
--   breaches) - before and after the change - as dirty (report_dirty_hours). The
--   scheduler (crm.reports.rollups.refresh) recomputes each dirty hour of
--   report_case_hourly from the cases of that hour (index range scans, ~1 hour of cases)
--   and then the business days those hours fall in (report_case_daily, summed from the
--   hourly rows). A late correction therefore rewrites exactly the buckets it touches.
--
-- * Message outcomes (message_events) and consent changes are append-only: a statement
--   trigger aggregates each INSERT (a COPY of thousands of outcomes becomes a few rows)
--   into report_message_delta, an append-only table nobody contends on; the scheduler
--   folds the deltas into report_message_hourly / report_message_daily
--   (dispatcher.reports.fold). Exact, since nothing is ever subtracted.
--
-- Case metrics are counted at the hour the thing happened (event time): `created` at
-- creation, first responses at the first response, `resolved`, resolution and handling
-- time and FCR at the resolution, an SLA target's met/breached at the moment it was
-- decided (met: when done in time; breached: when the evaluator recorded the breach, or
-- when done late). The dimensions are the case's attributes now (channel, status, type,
-- topic, priority, group, assignee). See crm/reports/rollups.py for the definitions.

CREATE TABLE report_dirty_hours (
    hour timestamptz PRIMARY KEY
);

CREATE TABLE report_case_hourly (
    hour                   timestamptz NOT NULL,
    channel                text NOT NULL,
    status                 text NOT NULL,
    case_type              text,
    category_id            bigint,
    priority               text NOT NULL,
    group_code             text,
    agent_id               bigint,
    created                integer NOT NULL DEFAULT 0,
    first_responses        integer NOT NULL DEFAULT 0,
    first_response_seconds double precision NOT NULL DEFAULT 0,
    resolved               integer NOT NULL DEFAULT 0,
    resolution_seconds     double precision NOT NULL DEFAULT 0,
    handling_seconds       double precision NOT NULL DEFAULT 0,
    first_response_met     integer NOT NULL DEFAULT 0,
    first_response_breached integer NOT NULL DEFAULT 0,
    resolution_met         integer NOT NULL DEFAULT 0,
    resolution_breached    integer NOT NULL DEFAULT 0,
    fcr                    integer NOT NULL DEFAULT 0,
    reopened               integer NOT NULL DEFAULT 0
);
CREATE INDEX report_case_hourly_hour_idx ON report_case_hourly (hour);

CREATE TABLE report_case_daily (LIKE report_case_hourly INCLUDING DEFAULTS);
ALTER TABLE report_case_daily DROP COLUMN hour;
ALTER TABLE report_case_daily ADD COLUMN day date NOT NULL;
CREATE INDEX report_case_daily_day_idx ON report_case_daily (day);
CREATE INDEX report_case_daily_agent_idx ON report_case_daily (agent_id, day) WHERE agent_id IS NOT NULL;

-- Narrower daily cuts of the same measures, for the reports that need fewer dimensions
-- (crm.reports.cases picks the narrowest that has every dimension a report groups or
-- filters by): the agent and topic dimensions multiply the rows of the full table.
CREATE TABLE report_case_daily_lite (LIKE report_case_daily INCLUDING DEFAULTS);
ALTER TABLE report_case_daily_lite DROP COLUMN category_id, DROP COLUMN agent_id;
CREATE INDEX report_case_daily_lite_day_idx ON report_case_daily_lite (day);
CREATE TABLE report_case_daily_agent (LIKE report_case_daily INCLUDING DEFAULTS);
ALTER TABLE report_case_daily_agent DROP COLUMN channel, DROP COLUMN status,
    DROP COLUMN case_type, DROP COLUMN category_id, DROP COLUMN priority, DROP COLUMN group_code;
CREATE INDEX report_case_daily_agent_day_idx ON report_case_daily_agent (day);
CREATE TABLE report_case_daily_topic (LIKE report_case_daily INCLUDING DEFAULTS);
ALTER TABLE report_case_daily_topic DROP COLUMN channel, DROP COLUMN status,
    DROP COLUMN case_type, DROP COLUMN agent_id, DROP COLUMN priority, DROP COLUMN group_code;
CREATE INDEX report_case_daily_topic_day_idx ON report_case_daily_topic (day);

-- The times a case's rollup contributions hang on: its resolution hour, first response
-- hour and breach hours need their own index for the recomputation of one hour.
CREATE INDEX cases_resolved_at_idx ON cases (resolved_at) WHERE resolved_at IS NOT NULL;
CREATE INDEX cases_first_response_at_idx ON cases (first_response_at) WHERE first_response_at IS NOT NULL;
CREATE INDEX cases_fr_breached_at_idx ON cases (first_response_breached_at)
    WHERE first_response_breached_at IS NOT NULL;
CREATE INDEX cases_res_breached_at_idx ON cases (resolution_breached_at)
    WHERE resolution_breached_at IS NOT NULL;

CREATE FUNCTION report_case_mark_insert() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO report_dirty_hours (hour)
    SELECT DISTINCT date_trunc('hour', t) FROM (
        SELECT unnest(ARRAY[n.created_at, n.first_response_at, n.resolved_at,
                            n.first_response_breached_at, n.resolution_breached_at]) AS t
        FROM new_rows n
        UNION ALL
        -- A repeat of an earlier case takes FCR away from it (counted at its resolution).
        SELECT o.resolved_at FROM new_rows n JOIN cases o ON o.id = n.repeat_of_id
        WHERE n.repeat_of_id IS NOT NULL
    ) x WHERE t IS NOT NULL
    ORDER BY 1
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE FUNCTION report_case_mark_update() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO report_dirty_hours (hour)
    SELECT DISTINCT date_trunc('hour', t) FROM (
        SELECT unnest(ARRAY[n.created_at, n.first_response_at, n.resolved_at,
                            n.first_response_breached_at, n.resolution_breached_at]) AS t
        FROM new_rows n
        UNION ALL
        SELECT unnest(ARRAY[o.first_response_at, o.resolved_at,
                            o.first_response_breached_at, o.resolution_breached_at])
        FROM old_rows o
        UNION ALL
        SELECT r.resolved_at FROM new_rows n JOIN cases r ON r.id = n.repeat_of_id
        WHERE n.repeat_of_id IS NOT NULL
    ) x WHERE t IS NOT NULL
    ORDER BY 1
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER cases_report_insert AFTER INSERT ON cases
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION report_case_mark_insert();
CREATE TRIGGER cases_report_update AFTER UPDATE ON cases
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION report_case_mark_update();

-- Recompute the hourly buckets of `hours` and the business days they fall in.
-- jit off: the planner's guess for a parameterised hour range is far above the real one
-- hour of cases, and compiling the plan took seconds where running it takes milliseconds.
CREATE FUNCTION report_case_recompute(hours timestamptz[]) RETURNS integer
    LANGUAGE plpgsql SET jit = off AS $$
DECLARE
    tz   text := herald_business_tz();
    days date[];
BEGIN
    DELETE FROM report_case_hourly WHERE hour = ANY (hours);
    -- One hour at a time (LATERAL): index range scans of that hour's cases, whatever
    -- the size of the table.
    INSERT INTO report_case_hourly
    SELECT h, f.channel, f.status, f.case_type, f.category_id, f.priority, f.group_code,
           f.assignee_id,
           sum(f.created), sum(f.first_responses), sum(f.first_response_seconds),
           sum(f.resolved), sum(f.resolution_seconds), sum(f.handling_seconds),
           sum(f.first_response_met), sum(f.first_response_breached),
           sum(f.resolution_met), sum(f.resolution_breached), sum(f.fcr), sum(f.reopened)
    FROM unnest(hours) h CROSS JOIN LATERAL (
        SELECT c.channel, c.status, c.case_type, c.category_id, c.priority, c.group_code,
               c.assignee_id, 1 AS created, 0 AS first_responses,
               0::float8 AS first_response_seconds, 0 AS resolved,
               0::float8 AS resolution_seconds, 0::float8 AS handling_seconds,
               0 AS first_response_met, 0 AS first_response_breached,
               0 AS resolution_met, 0 AS resolution_breached, 0 AS fcr, 0 AS reopened
        FROM cases c
        WHERE c.created_at >= h AND c.created_at < h + interval '1 hour'
          AND c.merged_into_id IS NULL
        UNION ALL
        -- First response: counted, timed and (met) decided at the first response.
        SELECT c.channel, c.status, c.case_type, c.category_id, c.priority, c.group_code,
               c.assignee_id, 0, 1,
               extract(epoch FROM c.first_response_at - c.created_at)::float8, 0, 0, 0,
               (c.first_response_due_at IS NOT NULL AND c.first_response_breached_at IS NULL
                AND c.first_response_at <= c.first_response_due_at)::int,
               (c.first_response_breached_at IS NULL
                AND c.first_response_at > c.first_response_due_at)::int,
               0, 0, 0, 0
        FROM cases c
        WHERE c.first_response_at >= h AND c.first_response_at < h + interval '1 hour'
          AND c.merged_into_id IS NULL
        UNION ALL
        -- A recorded first-response breach: breached when recorded.
        SELECT c.channel, c.status, c.case_type, c.category_id, c.priority, c.group_code,
               c.assignee_id, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0
        FROM cases c
        WHERE c.first_response_breached_at >= h
          AND c.first_response_breached_at < h + interval '1 hour'
          AND c.merged_into_id IS NULL
        UNION ALL
        -- Resolution: counted, timed, SLA (met or late) and FCR at the resolution.
        SELECT c.channel, c.status, c.case_type, c.category_id, c.priority, c.group_code,
               c.assignee_id, 0, 0, 0, 1,
               extract(epoch FROM c.resolved_at - c.created_at)::float8,
               extract(epoch FROM c.resolved_at - coalesce(c.assigned_at, c.created_at))::float8,
               0, 0,
               (c.resolution_due_at IS NOT NULL AND c.resolution_breached_at IS NULL
                AND c.resolved_at <= c.resolution_due_at)::int,
               (c.resolution_breached_at IS NULL AND c.resolved_at > c.resolution_due_at)::int,
               (c.reopen_count = 0
                AND NOT EXISTS (SELECT 1 FROM cases r WHERE r.repeat_of_id = c.id)
                AND (SELECT count(*) FROM case_events e
                     WHERE e.case_id = c.id AND e.kind = 'message' AND e.direction = 'out') <= 1)::int,
               (c.reopen_count > 0)::int
        FROM cases c
        WHERE c.resolved_at >= h AND c.resolved_at < h + interval '1 hour'
          AND c.merged_into_id IS NULL
        UNION ALL
        SELECT c.channel, c.status, c.case_type, c.category_id, c.priority, c.group_code,
               c.assignee_id, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0
        FROM cases c
        WHERE c.resolution_breached_at >= h AND c.resolution_breached_at < h + interval '1 hour'
          AND c.merged_into_id IS NULL
    ) f
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8;

    SELECT array_agg(DISTINCT (h AT TIME ZONE tz)::date) INTO days FROM unnest(hours) h;
    DELETE FROM report_case_daily WHERE day = ANY (days);
    INSERT INTO report_case_daily
        (channel, status, case_type, category_id, priority, group_code, agent_id,
         created, first_responses, first_response_seconds, resolved, resolution_seconds,
         handling_seconds, first_response_met, first_response_breached, resolution_met,
         resolution_breached, fcr, reopened, day)
    SELECT r.channel, r.status, r.case_type, r.category_id, r.priority, r.group_code, r.agent_id,
           sum(created), sum(first_responses), sum(first_response_seconds), sum(resolved),
           sum(resolution_seconds), sum(handling_seconds), sum(first_response_met),
           sum(first_response_breached), sum(resolution_met), sum(resolution_breached),
           sum(fcr), sum(reopened), d
    FROM unnest(days) d
    JOIN report_case_hourly r ON r.hour >= (d::timestamp AT TIME ZONE tz)
                             AND r.hour < ((d + 1)::timestamp AT TIME ZONE tz)
    GROUP BY r.channel, r.status, r.case_type, r.category_id, r.priority, r.group_code,
             r.agent_id, d;
    DELETE FROM report_case_daily_lite WHERE day = ANY (days);
    INSERT INTO report_case_daily_lite (channel, status, case_type, priority, group_code,
         created, first_responses, first_response_seconds, resolved, resolution_seconds,
         handling_seconds, first_response_met, first_response_breached, resolution_met,
         resolution_breached, fcr, reopened, day)
    SELECT channel, status, case_type, priority, group_code, sum(created), sum(first_responses), sum(first_response_seconds), sum(resolved),
           sum(resolution_seconds), sum(handling_seconds), sum(first_response_met),
           sum(first_response_breached), sum(resolution_met), sum(resolution_breached),
           sum(fcr), sum(reopened), day
    FROM report_case_daily WHERE day = ANY (days)
    GROUP BY channel, status, case_type, priority, group_code, day;
    DELETE FROM report_case_daily_agent WHERE day = ANY (days);
    INSERT INTO report_case_daily_agent (agent_id, created, first_responses, first_response_seconds, resolved, resolution_seconds,
         handling_seconds, first_response_met, first_response_breached, resolution_met,
         resolution_breached, fcr, reopened, day)
    SELECT agent_id, sum(created), sum(first_responses), sum(first_response_seconds), sum(resolved),
           sum(resolution_seconds), sum(handling_seconds), sum(first_response_met),
           sum(first_response_breached), sum(resolution_met), sum(resolution_breached),
           sum(fcr), sum(reopened), day FROM report_case_daily WHERE day = ANY (days)
    GROUP BY agent_id, day;
    DELETE FROM report_case_daily_topic WHERE day = ANY (days);
    INSERT INTO report_case_daily_topic (category_id, created, first_responses, first_response_seconds, resolved, resolution_seconds,
         handling_seconds, first_response_met, first_response_breached, resolution_met,
         resolution_breached, fcr, reopened, day)
    SELECT category_id, sum(created), sum(first_responses), sum(first_response_seconds), sum(resolved),
           sum(resolution_seconds), sum(handling_seconds), sum(first_response_met),
           sum(first_response_breached), sum(resolution_met), sum(resolution_breached),
           sum(fcr), sum(reopened), day FROM report_case_daily WHERE day = ANY (days)
    GROUP BY category_id, day;
    RETURN coalesce(array_length(hours, 1), 0);
END $$;

-- Messaging --------------------------------------------------------------------------------

-- The price of one message per channel, set by an administrator (reports' cost).
CREATE TABLE report_channel_prices (
    channel    text PRIMARY KEY CHECK (channel ~ '^[a-z][a-z_]{1,30}$'),
    price      numeric(12, 4) NOT NULL CHECK (price >= 0),
    currency   text NOT NULL DEFAULT 'UAH' CHECK (currency ~ '^[A-Z]{3}$'),
    updated_at timestamptz NOT NULL DEFAULT herald_now(),
    updated_by text NOT NULL DEFAULT 'system'
);

-- source: 'campaign' (source_id = campaign), 'trigger' (= trigger rule), 'operator' (0).
-- channel '' when the outcome has none (a skip before any channel).
CREATE TABLE report_message_delta (
    hour        timestamptz NOT NULL,
    source      text NOT NULL,
    source_id   bigint NOT NULL,
    channel     text NOT NULL,
    audience    integer NOT NULL DEFAULT 0,
    queued      integer NOT NULL DEFAULT 0,
    sent        integer NOT NULL DEFAULT 0,
    delivered   integer NOT NULL DEFAULT 0,
    read        integer NOT NULL DEFAULT 0,
    converted   integer NOT NULL DEFAULT 0,
    failed      integer NOT NULL DEFAULT 0,
    held        integer NOT NULL DEFAULT 0,
    skipped     integer NOT NULL DEFAULT 0,
    fallback_hops integer NOT NULL DEFAULT 0,
    opt_outs    integer NOT NULL DEFAULT 0
);

CREATE TABLE report_message_hourly (LIKE report_message_delta INCLUDING DEFAULTS,
    PRIMARY KEY (hour, source, source_id, channel));
CREATE TABLE report_message_daily (LIKE report_message_delta INCLUDING DEFAULTS);
ALTER TABLE report_message_daily DROP COLUMN hour;
ALTER TABLE report_message_daily ADD COLUMN day date NOT NULL;
ALTER TABLE report_message_daily ADD PRIMARY KEY (day, source, source_id, channel);

CREATE FUNCTION report_message_source(message_id text) RETURNS TABLE (source text, source_id bigint)
    LANGUAGE sql STABLE AS $$
    -- c<campaign>:<client>:<step>, t<realtime message>:<step>; anything else is an operator's
    SELECT CASE WHEN message_id ~ '^c[0-9]+(:|$)' THEN 'campaign'
                WHEN message_id ~ '^t[0-9]+(:|$)' THEN 'trigger'
                ELSE 'operator' END,
           CASE WHEN message_id ~ '^c[0-9]+(:|$)'
                    THEN split_part(substr(message_id, 2), ':', 1)::bigint
                WHEN message_id ~ '^t[0-9]+(:|$)' THEN coalesce((SELECT r.rule_id FROM realtime_messages r
                                       WHERE r.id = split_part(substr(message_id, 2), ':', 1)::bigint), 0)
               ELSE 0 END
$$;

CREATE FUNCTION report_message_events_delta() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO report_message_delta
        (hour, source, source_id, channel, queued, sent, delivered, read, converted, failed,
         held, skipped, fallback_hops)
    SELECT date_trunc('hour', n.at), s.source, s.source_id,
           coalesce(n.channel,
                    (SELECT e.channel FROM message_events e
                     WHERE e.message_id = n.message_id AND e.status = 'sent' LIMIT 1), ''),
           count(*) FILTER (WHERE n.status = 'queued'),
           count(*) FILTER (WHERE n.status = 'sent'),
           count(*) FILTER (WHERE n.status = 'delivered'),
           count(*) FILTER (WHERE n.status = 'read'),
           count(*) FILTER (WHERE n.status = 'converted'),
           count(*) FILTER (WHERE n.status = 'failed'),
           count(*) FILTER (WHERE n.status = 'held'),
           count(*) FILTER (WHERE n.status = 'skipped'),
           count(*) FILTER (WHERE n.status = 'sent' AND n.step > 0)
    FROM new_rows n CROSS JOIN LATERAL report_message_source(n.message_id) s
    GROUP BY 1, 2, 3, 4;
    RETURN NULL;
END $$;

CREATE TRIGGER message_events_report AFTER INSERT ON message_events
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION report_message_events_delta();

-- A trigger rule's audience: the realtime messages it made (contact-policy refusals too).
CREATE FUNCTION report_realtime_audience() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO report_message_delta (hour, source, source_id, channel, audience)
    SELECT date_trunc('hour', n.created_at), 'trigger', n.rule_id, '', count(*)
    FROM new_rows n WHERE n.rule_id IS NOT NULL
    GROUP BY 1, 3;
    RETURN NULL;
END $$;

CREATE TRIGGER realtime_messages_report AFTER INSERT ON realtime_messages
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION report_realtime_audience();

-- A campaign's audience: its size at launch, counted at the launch hour.
CREATE FUNCTION report_campaign_audience() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO report_message_delta (hour, source, source_id, channel, audience)
    SELECT date_trunc('hour', coalesce(n.launched_at, herald_now())), 'campaign', n.id, '',
           coalesce(n.audience_size, 0) - coalesce(o.audience_size, 0)
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE n.audience_size IS DISTINCT FROM o.audience_size;
    RETURN NULL;
END $$;

CREATE FUNCTION report_campaign_audience_insert() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO report_message_delta (hour, source, source_id, channel, audience)
    SELECT date_trunc('hour', coalesce(n.launched_at, herald_now())), 'campaign', n.id, '', n.audience_size
    FROM new_rows n WHERE n.audience_size IS NOT NULL;
    RETURN NULL;
END $$;

CREATE TRIGGER campaigns_report_insert AFTER INSERT ON campaigns
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION report_campaign_audience_insert();
CREATE TRIGGER campaigns_report AFTER UPDATE ON campaigns
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION report_campaign_audience();

-- An opt-out is caused by the last message sent to the client on that channel in the
-- seven days before it (the SMS STOP, the unsubscribe link, the app's switch).
CREATE FUNCTION report_consent_opt_outs() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO report_message_delta (hour, source, source_id, channel, opt_outs)
    SELECT date_trunc('hour', n.at), s.source, s.source_id, n.channel, count(*)
    FROM new_rows n
    CROSS JOIN LATERAL (
        SELECT e.message_id FROM message_events e
        WHERE e.client_id = n.client_id AND e.channel = n.channel AND e.status = 'sent'
          AND e.at <= n.at AND e.at > n.at - interval '7 days'
        ORDER BY e.at DESC LIMIT 1) last
    CROSS JOIN LATERAL report_message_source(last.message_id) s
    WHERE NOT n.new_opted_in AND n.old_opted_in IS DISTINCT FROM false
    GROUP BY 1, 2, 3, 4;
    RETURN NULL;
END $$;

CREATE TRIGGER consent_log_report AFTER INSERT ON consent_log
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION report_consent_opt_outs();

-- Fold the deltas into the hourly and daily tables (one folder at a time).
CREATE FUNCTION report_message_fold() RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    tz text := herald_business_tz();
    n  integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('report_message_fold'));
    CREATE TEMP TABLE IF NOT EXISTS report_fold_batch (LIKE report_message_delta) ON COMMIT DROP;
    WITH d AS (DELETE FROM report_message_delta RETURNING *)
    INSERT INTO report_fold_batch SELECT * FROM d;
    GET DIAGNOSTICS n = ROW_COUNT;
    INSERT INTO report_message_hourly
    SELECT hour, source, source_id, channel, sum(audience), sum(queued), sum(sent),
           sum(delivered), sum(read), sum(converted), sum(failed), sum(held), sum(skipped),
           sum(fallback_hops), sum(opt_outs)
    FROM report_fold_batch GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (hour, source, source_id, channel) DO UPDATE SET
        audience = report_message_hourly.audience + excluded.audience,
        queued = report_message_hourly.queued + excluded.queued,
        sent = report_message_hourly.sent + excluded.sent,
        delivered = report_message_hourly.delivered + excluded.delivered,
        read = report_message_hourly.read + excluded.read,
        converted = report_message_hourly.converted + excluded.converted,
        failed = report_message_hourly.failed + excluded.failed,
        held = report_message_hourly.held + excluded.held,
        skipped = report_message_hourly.skipped + excluded.skipped,
        fallback_hops = report_message_hourly.fallback_hops + excluded.fallback_hops,
        opt_outs = report_message_hourly.opt_outs + excluded.opt_outs;
    INSERT INTO report_message_daily
        (source, source_id, channel, audience, queued, sent, delivered, read, converted,
         failed, held, skipped, fallback_hops, opt_outs, day)
    SELECT source, source_id, channel, sum(audience), sum(queued), sum(sent),
           sum(delivered), sum(read), sum(converted), sum(failed), sum(held), sum(skipped),
           sum(fallback_hops), sum(opt_outs), (hour AT TIME ZONE tz)::date
    FROM report_fold_batch GROUP BY 1, 2, 3, 15 ORDER BY 15, 1, 2, 3
    ON CONFLICT (day, source, source_id, channel) DO UPDATE SET
        audience = report_message_daily.audience + excluded.audience,
        queued = report_message_daily.queued + excluded.queued,
        sent = report_message_daily.sent + excluded.sent,
        delivered = report_message_daily.delivered + excluded.delivered,
        read = report_message_daily.read + excluded.read,
        converted = report_message_daily.converted + excluded.converted,
        failed = report_message_daily.failed + excluded.failed,
        held = report_message_daily.held + excluded.held,
        skipped = report_message_daily.skipped + excluded.skipped,
        fallback_hops = report_message_daily.fallback_hops + excluded.fallback_hops,
        opt_outs = report_message_daily.opt_outs + excluded.opt_outs;
    DROP TABLE report_fold_batch;
    RETURN n;
END $$;

-- Rebuild the message rollups from the stored outcomes, audiences and opt-outs (after a
-- bulk load that bypassed the triggers): `herald rollups rebuild`.
CREATE FUNCTION report_message_rebuild() RETURNS integer
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('report_message_fold'));
    TRUNCATE report_message_delta, report_message_hourly, report_message_daily;
    INSERT INTO report_message_delta
        (hour, source, source_id, channel, queued, sent, delivered, read, converted, failed,
         held, skipped, fallback_hops)
    SELECT date_trunc('hour', n.at), s.source, s.source_id,
           coalesce(n.channel,
                    (SELECT e.channel FROM message_events e
                     WHERE e.message_id = n.message_id AND e.status = 'sent' LIMIT 1), ''),
           count(*) FILTER (WHERE n.status = 'queued'),
           count(*) FILTER (WHERE n.status = 'sent'),
           count(*) FILTER (WHERE n.status = 'delivered'),
           count(*) FILTER (WHERE n.status = 'read'),
           count(*) FILTER (WHERE n.status = 'converted'),
           count(*) FILTER (WHERE n.status = 'failed'),
           count(*) FILTER (WHERE n.status = 'held'),
           count(*) FILTER (WHERE n.status = 'skipped'),
           count(*) FILTER (WHERE n.status = 'sent' AND n.step > 0)
    FROM message_events n CROSS JOIN LATERAL report_message_source(n.message_id) s
    GROUP BY 1, 2, 3, 4;
    INSERT INTO report_message_delta (hour, source, source_id, channel, audience)
    SELECT date_trunc('hour', n.created_at), 'trigger', n.rule_id, '', count(*)
    FROM realtime_messages n WHERE n.rule_id IS NOT NULL GROUP BY 1, 3;
    INSERT INTO report_message_delta (hour, source, source_id, channel, audience)
    SELECT date_trunc('hour', coalesce(n.launched_at, n.created_at)), 'campaign', n.id, '',
           n.audience_size
    FROM campaigns n WHERE n.audience_size IS NOT NULL;
    INSERT INTO report_message_delta (hour, source, source_id, channel, opt_outs)
    SELECT date_trunc('hour', n.at), s.source, s.source_id, n.channel, count(*)
    FROM consent_log n
    CROSS JOIN LATERAL (
        SELECT e.message_id FROM message_events e
        WHERE e.client_id = n.client_id AND e.channel = n.channel AND e.status = 'sent'
          AND e.at <= n.at AND e.at > n.at - interval '7 days'
        ORDER BY e.at DESC LIMIT 1) last
    CROSS JOIN LATERAL report_message_source(last.message_id) s
    WHERE NOT n.new_opted_in AND n.old_opted_in IS DISTINCT FROM false
    GROUP BY 1, 2, 3, 4;
    RETURN report_message_fold();
END $$;

-- Dashboards ---------------------------------------------------------------------------------

-- A dashboard: a user's own (owner_id) or one an administrator assigns to a role as its
-- start page (role_code). widgets: [{"id", "kind", "report", "params", "w", "h", "title"}]
-- in grid order (crm.reports.dashboards validates them).
CREATE TABLE report_dashboards (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    owner_id   bigint REFERENCES users ON DELETE CASCADE,
    role_code  text REFERENCES roles ON DELETE CASCADE,
    widgets    jsonb NOT NULL DEFAULT '[]',
    created_at timestamptz NOT NULL DEFAULT herald_now(),
    updated_at timestamptz NOT NULL DEFAULT herald_now(),
    CHECK (owner_id IS NOT NULL OR role_code IS NOT NULL)
);
CREATE INDEX report_dashboards_owner_idx ON report_dashboards (owner_id);
CREATE UNIQUE INDEX report_dashboards_role_key ON report_dashboards (role_code)
    WHERE role_code IS NOT NULL;

INSERT INTO permissions (code, description_uk, description_en) VALUES
    ('reports.own',   'Переглядати власні звіти', 'View one''s own reports'),
    ('reports.team',  'Переглядати звіти команди, звернень і розсилок',
                      'View team, case and messaging reports'),
    ('reports.admin', 'Налаштовувати звіти: ціни каналів, дашборди ролей',
                      'Configure reports: channel prices, role dashboards');

INSERT INTO role_permissions (role_code, permission_code) VALUES
    ('admin', 'reports.own'), ('admin', 'reports.team'), ('admin', 'reports.admin'),
    ('supervisor', 'reports.own'), ('supervisor', 'reports.team'),
    ('analyst', 'reports.own'), ('analyst', 'reports.team'),
    ('marketer', 'reports.own'), ('marketer', 'reports.team'),
    ('operator_cc', 'reports.own'), ('operator_cos', 'reports.own');
