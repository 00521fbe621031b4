-- The supervisor's and administrator's workspace (issue 15).
--
-- The audit journal viewer filters by entity type or by the acting user over a period,
-- newest first (keyset on (at, id)): without these, a filter on a five-year journal scans
-- every partition. An agent's day reads the case events an agent wrote on one day.
CREATE INDEX audit_log_entity_type_at_idx ON audit_log (entity_type, at DESC, id DESC);
CREATE INDEX audit_log_actor_login_at_idx ON audit_log (actor_login, at DESC, id DESC);
CREATE INDEX case_events_actor_at_idx ON case_events (actor_id, at) WHERE actor_id IS NOT NULL;
