-- Triggers, issue 6 point 4: a rule's contact policy (at most max_messages per
-- period_seconds, at least min_interval_seconds apart) counts either the client's
-- messages of this rule only ('rule', as before) or every triggered message the client
-- was sent, whichever rule made it ('client'), so that several rules together cannot
-- flood one client. realtime_messages_client_idx (client_id, created_at) serves the count.

ALTER TABLE trigger_rules ADD COLUMN policy_scope text NOT NULL DEFAULT 'rule'
    CHECK (policy_scope IN ('rule', 'client'));
