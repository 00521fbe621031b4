-- Cases, issue 5 point 6 (SR-10): groups (departments), routing rules, agent presence,
-- skills and capacity, assignment, and hand-off tasks to another department.
--
-- A case's group comes from the first matching routing rule (or the default group) on
-- intake and on reclassification, unless a person placed it (cases.group_manual). The
-- scheduler's routing pass then assigns each group's unassigned open cases to its online
-- members within their capacity; an operator may also "take next". Every assignment locks
-- the case (FOR UPDATE SKIP LOCKED) and the agent's case_agents row before counting the
-- agent's load, so concurrent claims never assign a case twice or exceed a capacity.

INSERT INTO permissions (code, description_uk, description_en) VALUES
    ('cases.route', 'Розподіляти звернення: перепризначати, керувати присутністю агентів',
                    'Route cases: reassign, manage the presence of agents');

INSERT INTO role_permissions (role_code, permission_code) VALUES
    ('admin', 'cases.route'), ('supervisor', 'cases.route');

CREATE TABLE case_groups (
    code       text PRIMARY KEY CHECK (code ~ '^[a-z][a-z0-9_]{1,40}$'),
    name_uk    text NOT NULL CHECK (length(name_uk) BETWEEN 1 AND 200),
    name_en    text NOT NULL CHECK (length(name_en) BETWEEN 1 AND 200),
    mode       text NOT NULL DEFAULT 'round_robin' CHECK (mode IN ('round_robin', 'skills')),
    is_active  boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO case_groups (code, name_uk, name_en, mode) VALUES
    ('cc_l1',          'Контакт-центр, 1 лінія', 'Contact centre, line 1', 'round_robin'),
    ('cc_l2',          'Контакт-центр, 2 лінія', 'Contact centre, line 2', 'skills'),
    ('service_centre', 'Центр обслуговування',   'Service centre',         'round_robin'),
    ('technical',      'Технічна служба',        'Technical department',   'skills'),
    ('finance',        'Фінансовий відділ',      'Finance department',     'round_robin');

CREATE TABLE case_group_members (
    group_code text NOT NULL REFERENCES case_groups ON UPDATE CASCADE,
    user_id    bigint NOT NULL REFERENCES users,
    added_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_code, user_id)
);
CREATE INDEX case_group_members_user_idx ON case_group_members (user_id);

-- One row per agent (made when a user joins a group or first sets a presence). An empty
-- skill array means "any". capacity: the most open cases assigned at once (hard limit).
CREATE TABLE case_agents (
    user_id             bigint PRIMARY KEY REFERENCES users,
    presence            text NOT NULL DEFAULT 'offline'
                        CHECK (presence IN ('online', 'busy', 'away', 'offline')),
    presence_changed_at timestamptz,
    capacity            integer NOT NULL DEFAULT 5 CHECK (capacity BETWEEN 0 AND 1000),
    languages           text[] NOT NULL DEFAULT '{}',
    channels            text[] NOT NULL DEFAULT '{}',
    category_ids        bigint[] NOT NULL DEFAULT '{}',
    last_assigned_at    timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX case_agents_presence_idx ON case_agents (presence);

-- Every presence change with its time, for load and availability reports.
CREATE TABLE case_agent_presence_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users,
    presence    text NOT NULL,
    previous    text,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor_id    bigint,
    actor_login text NOT NULL
);
CREATE INDEX case_agent_presence_log_user_idx ON case_agent_presence_log (user_id, at);
CREATE INDEX case_agent_presence_log_at_idx ON case_agent_presence_log (at);
REVOKE UPDATE, DELETE, TRUNCATE ON case_agent_presence_log FROM herald_app;

-- Which group a new case goes to: the first active rule (by position, then id) whose
-- every given condition holds; an empty array is "any". category_ids match a case whose
-- category is one of them or below one of them.
CREATE TABLE case_routing_rules (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    position     integer NOT NULL DEFAULT 0,
    is_active    boolean NOT NULL DEFAULT true,
    channels     text[] NOT NULL DEFAULT '{}',
    category_ids bigint[] NOT NULL DEFAULT '{}',
    case_types   text[] NOT NULL DEFAULT '{}',
    priorities   text[] NOT NULL DEFAULT '{}',
    group_code   text NOT NULL REFERENCES case_groups ON UPDATE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

INSERT INTO case_routing_rules (name, position, channels, group_code) VALUES
    ('Візити до центру обслуговування', 10, ARRAY['walk_in'], 'service_centre');
INSERT INTO case_routing_rules (name, position, case_types, group_code) VALUES
    ('Технічні звернення', 20, ARRAY['technical'], 'technical'),
    ('Фінансові звернення', 30, ARRAY['financial'], 'finance');

CREATE TABLE case_routing_settings (
    id            boolean PRIMARY KEY DEFAULT true CHECK (id),
    default_group text REFERENCES case_groups ON UPDATE CASCADE,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    updated_by    text NOT NULL DEFAULT 'system'
);
INSERT INTO case_routing_settings (default_group) VALUES ('cc_l1');

-- A person (a supervisor's reassignment) placed the case: rules no longer move it.
-- Constant defaults: no rewrite of the 10 M-row table.
ALTER TABLE cases ADD COLUMN group_manual boolean NOT NULL DEFAULT false;
ALTER TABLE cases ADD COLUMN assigned_at timestamptz;
-- The routing pass and "take next": a group's unassigned open cases, small as that set.
-- In the order cases are claimed: most urgent first, then oldest.
CREATE INDEX cases_unassigned_idx
    ON cases (group_code, (array_position(ARRAY['urgent', 'high', 'normal', 'low']::text[], priority)),
              created_at, id)
    WHERE assignee_id IS NULL AND status IN ('new', 'in_progress', 'on_hold');

-- Hand-off of work on a case to another department, with its own deadline.
CREATE TABLE case_tasks (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    case_id          bigint NOT NULL REFERENCES cases,
    group_code       text NOT NULL REFERENCES case_groups ON UPDATE CASCADE,
    assignee_id      bigint REFERENCES users,
    title            text NOT NULL CHECK (length(title) BETWEEN 1 AND 500),
    body             text CHECK (length(body) <= 4000),
    due_at           timestamptz NOT NULL,
    status           text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'done', 'cancelled')),
    result           text CHECK (length(result) <= 4000),
    created_by       bigint REFERENCES users,
    created_by_login text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    closed_by        bigint REFERENCES users,
    closed_by_login  text,
    closed_at        timestamptz,
    CHECK ((status = 'open') = (closed_at IS NULL))
);
CREATE INDEX case_tasks_case_idx ON case_tasks (case_id, id);
CREATE INDEX case_tasks_open_group_idx ON case_tasks (group_code, due_at) WHERE status = 'open';
CREATE INDEX case_tasks_open_assignee_idx ON case_tasks (assignee_id, due_at)
    WHERE status = 'open' AND assignee_id IS NOT NULL;
CREATE INDEX case_tasks_group_idx ON case_tasks (group_code, created_at);
REVOKE DELETE, TRUNCATE ON case_tasks FROM herald_app;
