-- A message whose provider stayed unreachable (5xx, timeouts, 429) through the send's own
-- retries, on the last channel of its chain, is held for a minute and sent again (issue 17:
-- an SMS outage of 60 s failed every campaign fallback and trigger it met, for good).
-- The scheduler releases these holds like quiet hours and rate limits (release_at).

ALTER TABLE held_messages DROP CONSTRAINT held_messages_reason_check;
ALTER TABLE held_messages ADD CONSTRAINT held_messages_reason_check
    CHECK (reason IN ('quiet_hours', 'air_raid', 'rate_limit', 'paused', 'provider'));
