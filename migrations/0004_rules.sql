-- Send rules configured by administrators: stop lists, quiet hours, air-raid alerts and
-- channel/provider rate limits (rules/). Consents live in 0003; per-campaign rate limits
-- live with the campaigns. Every change made through rules/ is also written to the
-- audit journal in the same transaction.

-- Stop lists (IC-08): a client, or a whole segment, blocked from some topics (or all)
-- for a period. segment_id has no foreign key yet: segments arrive with a later issue,
-- and membership is resolved by the caller (rules.stop_lists.SegmentMembership).
CREATE TABLE stop_list_entries (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_id     bigint REFERENCES clients,
    segment_id    bigint CHECK (segment_id > 0),
    -- NULL: every topic. Codes are checked against message_topics when written.
    topics        text[] CHECK (cardinality(topics) > 0),
    reason        text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    valid_from    timestamptz NOT NULL DEFAULT now(),
    valid_until   timestamptz,
    created_by    text NOT NULL,
    created_by_id bigint,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (num_nonnulls(client_id, segment_id) = 1),
    CHECK (valid_until IS NULL OR valid_until > valid_from)
);
CREATE INDEX stop_list_entries_client_idx ON stop_list_entries (client_id) WHERE client_id IS NOT NULL;
CREATE INDEX stop_list_entries_segment_idx ON stop_list_entries (segment_id) WHERE segment_id IS NOT NULL;

-- Quiet hours (IC-09): wall-clock windows in the recipient's time zone. A window starts
-- at start_time on each of its ISO weekdays (1 = Monday) and ends at end_time the same
-- day, or the next day when end_time <= start_time (21:00-09:00 crosses midnight).
-- channels NULL: every channel. Urgent messages (message_templates.urgent) are exempt.
CREATE TABLE quiet_hours_windows (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    weekdays   smallint[] NOT NULL DEFAULT '{1,2,3,4,5,6,7}'
                   CHECK (cardinality(weekdays) BETWEEN 1 AND 7 AND weekdays <@ '{1,2,3,4,5,6,7}'),
    start_time time NOT NULL CHECK (start_time < '24:00'),
    end_time   time NOT NULL CHECK (end_time < '24:00'),
    channels   text[] CHECK (cardinality(channels) > 0),
    is_active  boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (start_time <> end_time)
);

-- Air-raid alerts (IC-09): the current state of each region that was ever switched, with
-- a per-region version that orders the Redis mirror's updates, and the history of alert
-- periods. At most one open period per region.
CREATE TABLE air_raid_states (
    region_code text PRIMARY KEY REFERENCES regions,
    active      boolean NOT NULL,
    version     bigint NOT NULL CHECK (version >= 0),
    changed_at  timestamptz NOT NULL DEFAULT now(),
    changed_by  text NOT NULL,
    source      text NOT NULL CHECK (source IN ('admin', 'integration'))
);

CREATE TABLE air_raid_alerts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    region_code  text NOT NULL REFERENCES regions,
    started_at   timestamptz NOT NULL,
    started_by   text NOT NULL,
    start_source text NOT NULL CHECK (start_source IN ('admin', 'integration')),
    ended_at     timestamptz,
    ended_by     text,
    end_source   text CHECK (end_source IN ('admin', 'integration')),
    CHECK (ended_at IS NULL OR ended_at >= started_at),
    CHECK ((ended_at IS NULL) = (ended_by IS NULL) AND (ended_at IS NULL) = (end_source IS NULL))
);
CREATE UNIQUE INDEX air_raid_alerts_open_key ON air_raid_alerts (region_code) WHERE ended_at IS NULL;
CREATE INDEX air_raid_alerts_region_idx ON air_raid_alerts (region_code, started_at DESC);
CREATE INDEX air_raid_alerts_started_idx ON air_raid_alerts (started_at DESC);

-- Rate limits (IC-05) per channel (provider NULL: all providers of the channel together)
-- and per provider; a send through provider P of channel C takes tokens from both rows
-- when both exist, and from its campaign's limits.
CREATE TABLE rate_limits (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel    text NOT NULL CHECK (channel ~ '^[a-z][a-z0-9_]{1,30}$'),
    provider   text CHECK (provider ~ '^[a-z][a-z0-9_.-]{0,62}$'),
    per_minute integer CHECK (per_minute > 0),
    per_hour   integer CHECK (per_hour > 0),
    updated_by text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (per_minute IS NOT NULL OR per_hour IS NOT NULL),
    UNIQUE NULLS NOT DISTINCT (channel, provider)
);
