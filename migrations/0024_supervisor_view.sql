-- The supervisor's live view (issue 5 point 8, SR-11). Reads the SLA columns of 0021 and
-- the agents of 0022; the change feed is the NOTIFY of 0018 plus the one below.

INSERT INTO permissions (code, description_uk, description_en) VALUES
    ('cases.supervise', 'Бачити живу панель керівника: відкриті звернення, SLA, навантаження операторів',
                        'See the supervisor''s live view: open cases, SLA, agent load');
INSERT INTO role_permissions (role_code, permission_code) VALUES
    ('admin', 'cases.supervise'), ('supervisor', 'cases.supervise');

-- Presence, capacity, skills or group membership changed: the live view re-reads agents.
CREATE FUNCTION case_agents_notify_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('herald_agent_changed', '');
    RETURN NULL;
END $$;

CREATE TRIGGER case_agents_notify_change AFTER INSERT OR UPDATE OR DELETE ON case_agents
    FOR EACH STATEMENT EXECUTE FUNCTION case_agents_notify_change();
CREATE TRIGGER case_group_members_notify_change AFTER INSERT OR UPDATE OR DELETE ON case_group_members
    FOR EACH STATEMENT EXECUTE FUNCTION case_agents_notify_change();

-- The grouped counts read only this index (open work is tens of thousands of rows among
-- millions of historical cases).
CREATE INDEX cases_supervisor_counts_idx
    ON cases (channel, group_code, category_id, case_type, priority, sla_state)
    INCLUDE (assignee_id)
    WHERE status NOT IN ('resolved', 'closed');

-- Breached / at-risk lists and the open-case pages: by SLA state and nearest deadline.
CREATE INDEX cases_supervisor_due_idx
    ON cases (sla_state, (CASE WHEN first_response_at IS NULL
                               THEN least(first_response_due_at, resolution_due_at)
                               ELSE resolution_due_at END), id)
    WHERE status NOT IN ('resolved', 'closed');
CREATE INDEX cases_supervisor_next_due_idx
    ON cases ((CASE WHEN first_response_at IS NULL
                    THEN least(first_response_due_at, resolution_due_at)
                    ELSE resolution_due_at END), id)
    WHERE status NOT IN ('resolved', 'closed');
