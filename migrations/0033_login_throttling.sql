-- Login throttling that an anonymous script cannot turn against a contact centre
-- (crm/login_guard.py has the rule, the README's auth section explains it):
--
-- * users.lockouts: locks in a row without a successful login; each doubles the next one.
-- * login_devices: a browser (the herald_device cookie, only its SHA-256 here) from which a
--   user has logged in. Attempts from such a device are counted and locked per device and
--   user, apart from the account's lock, which only binds the unknown devices.
-- * login_address_failures: failed logins per client address (IPv4, or an IPv6 /64), for
--   the escalating delay between attempts from unknown devices.

ALTER TABLE users ADD COLUMN lockouts integer NOT NULL DEFAULT 0;

CREATE TABLE login_devices (
    token_hash    bytea NOT NULL,
    user_id       bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT herald_now(),
    last_login_at timestamptz NOT NULL DEFAULT herald_now(),
    failed_logins integer NOT NULL DEFAULT 0,
    locked_until  timestamptz,
    lockouts      integer NOT NULL DEFAULT 0,
    PRIMARY KEY (token_hash, user_id)
);
CREATE INDEX login_devices_user_idx ON login_devices (user_id);

CREATE TABLE login_address_failures (
    address         cidr PRIMARY KEY,
    failures        integer NOT NULL,
    last_attempt_at timestamptz NOT NULL
);
CREATE INDEX login_address_failures_at_idx ON login_address_failures (last_attempt_at);

-- The key of a client address: the address itself for IPv4, its /64 for IPv6 (one host
-- commonly holds a whole /64).
CREATE FUNCTION herald_login_address(address inet) RETURNS cidr
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN family(address) = 6 THEN network(set_masklen(address, 64))
                      ELSE network(set_masklen(address, 32)) END $$;
