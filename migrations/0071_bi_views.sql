-- The `bi` schema (issue 16): documented, versioned views for BI tools (Power BI's
-- PostgreSQL connector, Excel, DBeaver, psql) over the report aggregates and the main
-- entities, and the read-only role they connect with.
--
-- Versioning: a view's name ends in its version (_v1). A change that removes or renames a
-- column, or changes its meaning, adds a new version beside the old one; the old one is
-- dropped no sooner than a release later (README, "BI"). Columns are only ever added to a
-- version. No personal data: no names, phones, e-mails, addresses or texts of clients;
-- agents are named by login.
--
-- herald_bi: the role that may read the bi schema and nothing else (the views run with
-- their owner's rights, so it needs no rights on the tables). On the demo stand it logs
-- in itself; in production a DBA makes the BI tools' logins members of it (README). It is
-- created by scripts/ensure-services.sh (or a DBA), as herald_app is; herald_bi_grant() grants it the schema, and `herald migrate` runs it every time,
-- so a role created after this migration gets its rights on the next migrate.

CREATE SCHEMA bi;
COMMENT ON SCHEMA bi IS 'Herald BI views: read-only, versioned (_v1), without personal data';

CREATE VIEW bi.cases_daily_v1 AS
SELECT r.day, r.channel, r.status, r.case_type, cat.code AS topic, root.code AS topic_root,
       r.priority, r.group_code, u.login AS agent_login, r.created, r.first_responses,
       r.first_response_seconds, r.resolved, r.resolution_seconds, r.handling_seconds,
       r.first_response_met, r.first_response_breached, r.resolution_met,
       r.resolution_breached, r.fcr, r.reopened
FROM report_case_daily r
LEFT JOIN case_categories cat ON cat.id = r.category_id
LEFT JOIN case_categories root ON root.id = coalesce(cat.parent_id, cat.id)
LEFT JOIN users u ON u.id = r.agent_id;
COMMENT ON VIEW bi.cases_daily_v1 IS
    'Cases per business day (Herald''s business time zone) and dimensions; each measure counted on the day it happened (see crm/reports/rollups.py). Averages: divide the *_seconds sums by their counts.';
COMMENT ON COLUMN bi.cases_daily_v1.day IS 'Business day the measures happened on';
COMMENT ON COLUMN bi.cases_daily_v1.status IS 'The case''s status now';
COMMENT ON COLUMN bi.cases_daily_v1.topic IS 'Category (topic) code now; topic_root: its top-level topic';
COMMENT ON COLUMN bi.cases_daily_v1.created IS 'Cases created that day';
COMMENT ON COLUMN bi.cases_daily_v1.first_responses IS 'Cases first answered that day';
COMMENT ON COLUMN bi.cases_daily_v1.first_response_seconds IS 'Sum of seconds from creation to the first response, of first_responses';
COMMENT ON COLUMN bi.cases_daily_v1.resolved IS 'Cases resolved that day';
COMMENT ON COLUMN bi.cases_daily_v1.resolution_seconds IS 'Sum of seconds from creation to resolution, of resolved';
COMMENT ON COLUMN bi.cases_daily_v1.handling_seconds IS 'Sum of seconds from assignment to resolution, of resolved';
COMMENT ON COLUMN bi.cases_daily_v1.fcr IS 'Resolved that day at first contact: never reopened, no repeat case, at most one agent message';
COMMENT ON COLUMN bi.cases_daily_v1.reopened IS 'Resolved that day after having been reopened';

CREATE VIEW bi.cases_hourly_v1 AS
SELECT r.hour, r.channel, r.status, r.case_type, cat.code AS topic, r.priority, r.group_code,
       u.login AS agent_login, r.created, r.first_responses, r.first_response_seconds,
       r.resolved, r.resolution_seconds, r.handling_seconds, r.first_response_met,
       r.first_response_breached, r.resolution_met, r.resolution_breached, r.fcr, r.reopened
FROM report_case_hourly r
LEFT JOIN case_categories cat ON cat.id = r.category_id
LEFT JOIN users u ON u.id = r.agent_id;
COMMENT ON VIEW bi.cases_hourly_v1 IS
    'Cases per UTC hour and dimensions; the same measures as bi.cases_daily_v1';

CREATE VIEW bi.messages_daily_v1 AS
SELECT r.day, r.source, r.source_id,
       CASE r.source WHEN 'campaign' THEN c.name WHEN 'trigger' THEN t.name END AS source_name,
       nullif(r.channel, '') AS channel, r.audience, r.queued, r.sent, r.delivered, r.read,
       r.converted, r.failed, r.held, r.skipped, r.fallback_hops, r.opt_outs,
       r.sent * coalesce(p.price, 0) AS cost, p.currency
FROM report_message_daily r
LEFT JOIN campaigns c ON r.source = 'campaign' AND c.id = r.source_id
LEFT JOIN trigger_rules t ON r.source = 'trigger' AND t.id = r.source_id
LEFT JOIN report_channel_prices p ON p.channel = r.channel;
COMMENT ON VIEW bi.messages_daily_v1 IS
    'Message outcomes per business day, source (campaign, trigger rule, operator) and channel; cost at today''s channel prices (see dispatcher/reports.py)';
COMMENT ON COLUMN bi.messages_daily_v1.fallback_hops IS 'Messages sent on a later step of the channel chain';
COMMENT ON COLUMN bi.messages_daily_v1.opt_outs IS 'Opt-outs within 7 days of a message of this source on the channel';

CREATE VIEW bi.cases_v1 AS
SELECT c.id, c.number, c.channel, c.status, c.case_type, cat.code AS topic, c.priority,
       c.group_code, u.login AS agent_login, c.client_id, c.is_repeat, c.repeat_of_id,
       c.created_at, c.first_response_at, c.resolved_at, c.first_response_due_at,
       c.resolution_due_at, c.first_response_breached_at, c.resolution_breached_at,
       c.reopen_count, c.sla_state, c.updated_at
FROM cases c
LEFT JOIN case_categories cat ON cat.id = c.category_id
LEFT JOIN users u ON u.id = c.assignee_id
WHERE c.merged_into_id IS NULL;
COMMENT ON VIEW bi.cases_v1 IS
    'Every case (merged-away ones left out) without its texts or contact details; filter on created_at for incremental refresh';

CREATE VIEW bi.topics_v1 AS
SELECT c.code, p.code AS parent_code, c.name_uk, c.name_en, c.is_active
FROM case_categories c LEFT JOIN case_categories p ON p.id = c.parent_id;
COMMENT ON VIEW bi.topics_v1 IS 'Case topics (categories) and their parents';

CREATE VIEW bi.groups_v1 AS
SELECT code, name_uk, name_en, is_active FROM case_groups;
COMMENT ON VIEW bi.groups_v1 IS 'Case groups (departments)';

CREATE VIEW bi.agents_v1 AS
SELECT u.login, a.presence, a.capacity,
       (SELECT array_agg(m.group_code ORDER BY m.group_code)
        FROM case_group_members m WHERE m.user_id = a.user_id) AS groups
FROM case_agents a JOIN users u ON u.id = a.user_id;
COMMENT ON VIEW bi.agents_v1 IS 'Agents by login: presence and capacity now, groups';

CREATE VIEW bi.agent_presence_v1 AS
SELECT u.login, l.presence, l.at AS since,
       lead(l.at) OVER (PARTITION BY l.user_id ORDER BY l.at, l.id) AS until
FROM case_agent_presence_log l JOIN users u ON u.id = l.user_id;
COMMENT ON VIEW bi.agent_presence_v1 IS 'Agents'' presence intervals (until NULL: still in it)';

CREATE VIEW bi.campaigns_v1 AS
SELECT id, name, status, channel_chain, audience_size, scheduled_at, launched_at, finished_at,
       created_at
FROM campaigns;
COMMENT ON VIEW bi.campaigns_v1 IS 'Campaigns';

CREATE VIEW bi.trigger_rules_v1 AS
SELECT id, name, event_type, channel_chain, is_active, version, created_at, updated_at
FROM trigger_rules;
COMMENT ON VIEW bi.trigger_rules_v1 IS 'Trigger rules';

CREATE VIEW bi.channel_prices_v1 AS
SELECT channel, price, currency, updated_at FROM report_channel_prices;
COMMENT ON VIEW bi.channel_prices_v1 IS 'Price of one message per channel, set by an administrator';

CREATE FUNCTION herald_bi_grant() RETURNS boolean
    LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'herald_bi') THEN
        RAISE NOTICE 'role herald_bi is missing: BI logins cannot be granted the bi schema '
                     '(scripts/ensure-services.sh creates it; README, "BI")';
        RETURN false;
    END IF;
    GRANT USAGE ON SCHEMA bi TO herald_bi;
    GRANT SELECT ON ALL TABLES IN SCHEMA bi TO herald_bi;
    RETURN true;
END $$;

SELECT herald_bi_grant();
-- The application reads them too (the tests, the report pages may link to them).
GRANT USAGE ON SCHEMA bi TO herald_app;
GRANT SELECT ON ALL TABLES IN SCHEMA bi TO herald_app;
