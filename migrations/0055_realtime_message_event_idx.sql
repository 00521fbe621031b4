-- The trigger page's "recent events and what they caused" (issue 14): the messages an
-- event made, found by (producer, event id) with one index probe per event.
CREATE INDEX realtime_messages_event_idx ON realtime_messages (producer_id, event_id)
    WHERE event_id IS NOT NULL;
