-- Client search (issue 4, point 7) and incoming calls from VICIdial (point 8, SR-03).
--
-- Search needs one new index: the last digits of a phone ("1234567") are a prefix of the
-- reversed number, so a b-tree on reverse(phone_digits) answers a suffix search with a
-- range scan. It reads contacts (~13 M rows) once to build: about a minute at 13 M, no
-- rewrite of the table. Full numbers and number prefixes use contacts_phone_idx (0003);
-- OR prefixes use accounts_or_number_key; names and addresses the trigram indexes of 0003.
CREATE INDEX contacts_phone_rev_idx ON contacts (reverse(phone_digits)) WHERE phone_digits IS NOT NULL;

-- One row per call VICIdial told us about. call_ref is VICIdial's call_id (or Asterisk's
-- uniqueid when only that was sent). phone is the caller's number in E.164 when it is a
-- valid number; phone_raw is what VICIdial sent (anonymous callers send short strings).
CREATE TABLE calls (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_ref             text NOT NULL CHECK (length(call_ref) BETWEEN 1 AND 100),
    direction            text NOT NULL DEFAULT 'in' CHECK (direction IN ('in', 'out')),
    phone                text CHECK (phone ~ '^\+[1-9][0-9]{7,14}$'),
    phone_raw            text NOT NULL,
    client_id            bigint REFERENCES clients,
    -- How the client was found: the caller's phone, or what the IVR collected.
    identified_by        text CHECK (identified_by IN ('phone', 'or_number', 'client_id')),
    identification       text CHECK (identification IN ('match', 'candidates', 'unknown')),
    candidate_client_ids bigint[] NOT NULL DEFAULT '{}',
    -- VICIdial's user (the Herald login of the operator) and the user it resolved to.
    agent_login          text,
    agent_user_id        bigint REFERENCES users,
    extension            text,
    campaign             text,
    lead_id              text,
    ivr_or_number        text,
    ivr_client_id        bigint,
    ringing_at           timestamptz,
    answered_at          timestamptz,
    hung_up_at           timestamptz,
    disposition          text,
    talk_time            integer CHECK (talk_time >= 0),
    recording_url        text,
    transcript           text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX calls_call_ref_key ON calls (call_ref);
CREATE INDEX calls_client_idx ON calls (client_id, created_at DESC) WHERE client_id IS NOT NULL;
CREATE INDEX calls_agent_idx ON calls (agent_user_id, created_at DESC) WHERE agent_user_id IS NOT NULL;

-- Each event of a call once: a VICIdial retry of the same URL changes nothing.
CREATE TABLE call_events (
    call_id     bigint NOT NULL REFERENCES calls ON DELETE CASCADE,
    event       text NOT NULL CHECK (event IN ('ringing', 'answered', 'hung_up')),
    at          timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    payload     jsonb NOT NULL,
    PRIMARY KEY (call_id, event)
);
