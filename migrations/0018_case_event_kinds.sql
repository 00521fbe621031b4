-- Cases, issue 5 points 5-9: the kinds of case event the SLA, escalation, routing,
-- hand-off and client-notification parts write, declared once here so that those parts'
-- own migrations need not each redefine the same CHECK; and a NOTIFY on every change of a
-- case, which feeds the supervisor's live view (any API process LISTENs; a NOTIFY is sent
-- on commit only, so the view never shows a change that was rolled back).
--
-- New kinds: sla (a warning or a breach of a target), escalation (what an escalation
-- rule did), deadline (a target's due time set or changed), task (a hand-off task made,
-- done or cancelled), info_request (the client was asked for more information),
-- notification (the client was sent an update through the messaging engine).

ALTER TABLE case_events DROP CONSTRAINT case_events_kind_check;
ALTER TABLE case_events ADD CONSTRAINT case_events_kind_check CHECK (kind IN (
    'created', 'message', 'status', 'assignment', 'classification', 'client_link', 'flag',
    'merge', 'note', 'sla', 'escalation', 'deadline', 'task', 'info_request', 'notification'));

-- One notification per changed case per transaction: PostgreSQL folds identical payloads
-- of one transaction into one.
CREATE FUNCTION cases_notify_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('herald_case_changed', NEW.id::text);
    RETURN NULL;
END $$;

CREATE TRIGGER cases_notify_change AFTER INSERT OR UPDATE ON cases
    FOR EACH ROW EXECUTE FUNCTION cases_notify_change();
