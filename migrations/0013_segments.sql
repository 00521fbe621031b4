-- Segments (issue 6, point 1; CM-04..CM-06): the attribute catalogue, external attributes,
-- channel usage (channel_usage of 0011) as attributes,
-- segments with their members, and the dirty-client queue that keeps dynamic segments
-- current.
--
-- Sizing: a segment may hold 5 M of the 13 M clients. Members are one narrow row each
-- (segment_id, client_id) under one primary key, written by one INSERT ... SELECT in
-- client_id order (the index grows at its right edge). No foreign key to clients on the
-- members: 5 M key checks would double the cost of a materialisation, and a member whose
-- client disappeared is dropped by the next refresh of a dynamic segment.

-- The catalogue the segment builder offers (GET /api/v1/segments/attributes). Built-in
-- attributes name a column of their source table (client, account, billing); consent is
-- computed (channel and topic qualifiers, the topic default without a row); external
-- attributes are declared through the API and their values live in client_attributes.
-- The compiler takes every identifier from here (and from its own table aliases), never
-- from a request.
CREATE TABLE segment_attributes (
    code          text PRIMARY KEY CHECK (code ~ '^[a-z][a-z0-9_]{0,30}(\.[a-z][a-z0-9_]{0,40}){1,2}$'),
    label_uk      text NOT NULL CHECK (length(label_uk) BETWEEN 1 AND 200),
    label_en      text NOT NULL CHECK (length(label_en) BETWEEN 1 AND 200),
    type          text NOT NULL CHECK (type IN ('string', 'number', 'date', 'boolean', 'enum', 'string_list')),
    operators     text[] NOT NULL CHECK (cardinality(operators) > 0),
    -- enum: the allowed values; NULL with values_from: read from that reference table.
    enum_values   text[],
    values_from   text CHECK (values_from IN ('regions', 'tariffs')),
    source        text NOT NULL CHECK (source IN ('client', 'account', 'billing', 'consent',
                                                   'channel_usage', 'external')),
    source_column text CHECK (source_column ~ '^[a-z][a-z0-9_]{0,62}$'),
    description   text NOT NULL DEFAULT '',
    created_by    text NOT NULL DEFAULT 'migration',
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((source IN ('client', 'account', 'billing', 'channel_usage')) = (source_column IS NOT NULL)),
    CHECK (type = 'enum' OR (enum_values IS NULL AND values_from IS NULL))
);

INSERT INTO segment_attributes (code, label_uk, label_en, type, operators, enum_values, values_from,
                                source, source_column, description) VALUES
    ('client.birth_date', 'Дата народження', 'Date of birth', 'date',
     '{equals,not_equals,between,lt,lte,gt,gte,older_than_days,within_last_days,is_empty,is_not_empty}',
     NULL, NULL, 'client', 'birth_date', ''),
    ('client.created_at', 'Дата реєстрації клієнта', 'Client registered on', 'date',
     '{equals,not_equals,between,lt,lte,gt,gte,older_than_days,within_last_days}',
     NULL, NULL, 'client', 'created_at', ''),
    ('account.region', 'Регіон', 'Region', 'enum', '{equals,not_equals,in,not_in}',
     NULL, 'regions', 'account', 'region_code', 'Region of a personal account'),
    ('account.consumer_type', 'Тип споживача', 'Consumer type', 'enum', '{equals,not_equals,in,not_in}',
     '{household,household_heating,condominium,religious,budget}', NULL, 'account', 'consumer_type', ''),
    ('account.registers', 'Реєстри (пільгові категорії)', 'Registers (privileged categories)',
     'string_list', '{contains,in,is_empty,is_not_empty}', NULL, NULL, 'account', 'registers',
     'contains: on the register; in: on any of the registers'),
    ('account.destroyed_housing', 'Зруйноване житло', 'Destroyed housing', 'boolean', '{equals}',
     NULL, NULL, 'account', 'destroyed_housing', ''),
    ('account.tariff', 'Тариф', 'Tariff', 'enum', '{equals,not_equals,in,not_in}',
     NULL, 'tariffs', 'account', 'tariff_code', ''),
    ('account.status', 'Стан особового рахунку', 'Account status', 'enum', '{equals,not_equals,in,not_in}',
     '{active,suspended,closed}', NULL, 'account', 'status', ''),
    ('account.city', 'Населений пункт', 'City or village', 'string',
     '{equals,not_equals,in,not_in,contains,is_empty,is_not_empty}', NULL, NULL, 'account', 'city',
     'Compared case-insensitively, apostrophe variants ignored'),
    ('account.opened_at', 'Дата відкриття рахунку', 'Account opened on', 'date',
     '{equals,not_equals,between,lt,lte,gt,gte,older_than_days,within_last_days}',
     NULL, NULL, 'account', 'opened_at', ''),
    ('billing.balance', 'Баланс', 'Balance', 'number',
     '{equals,not_equals,between,lt,lte,gt,gte,is_empty,is_not_empty}', NULL, NULL, 'billing', 'balance',
     'Positive: prepayment'),
    ('billing.debt', 'Заборгованість', 'Debt', 'number',
     '{equals,not_equals,between,lt,lte,gt,gte,is_empty,is_not_empty}', NULL, NULL, 'billing', 'debt', ''),
    ('billing.last_payment_at', 'Дата останньої оплати', 'Last payment on', 'date',
     '{equals,not_equals,between,lt,lte,gt,gte,older_than_days,within_last_days,is_empty,is_not_empty}',
     NULL, NULL, 'billing', 'last_payment_at', 'older_than_days 60: no payment for 60 days'),
    ('billing.last_charge_amount', 'Сума останнього нарахування', 'Last charge amount', 'number',
     '{equals,not_equals,between,lt,lte,gt,gte,is_empty,is_not_empty}', NULL, NULL, 'billing',
     'last_charge_amount', ''),
    ('billing.last_payment_amount', 'Сума останньої оплати', 'Last payment amount', 'number',
     '{equals,not_equals,between,lt,lte,gt,gte,is_empty,is_not_empty}', NULL, NULL, 'billing',
     'last_payment_amount', ''),
    ('billing.due_date', 'Термін оплати', 'Payment due on', 'date',
     '{equals,not_equals,between,lt,lte,gt,gte,older_than_days,within_last_days,is_empty,is_not_empty}',
     NULL, NULL, 'billing', 'due_date', ''),
    ('consent.opted_in', 'Згода на повідомлення', 'Consent to messages', 'boolean', '{equals}',
     NULL, NULL, 'consent', NULL,
     'Needs channel and topic; without an explicit choice the topic default applies'),
    ('usage.last_at', 'Останнє використання каналу', 'Channel last used on', 'date',
     '{equals,between,lt,lte,gt,gte,older_than_days,within_last_days,is_empty,is_not_empty}',
     NULL, NULL, 'channel_usage', 'last_at',
     'Needs channel (cabinet, app, shop, chatbot); is_empty: never used it'),
    ('usage.first_at', 'Перше використання каналу', 'Channel first used on', 'date',
     '{equals,between,lt,lte,gt,gte,older_than_days,within_last_days,is_empty,is_not_empty}',
     NULL, NULL, 'channel_usage', 'first_at', 'Needs channel'),
    ('usage.interactions', 'Кількість звернень через канал', 'Interactions on the channel', 'number',
     '{equals,not_equals,between,lt,lte,gt,gte,is_empty,is_not_empty}',
     NULL, NULL, 'channel_usage', 'interactions', 'Needs channel');

-- Values of external attributes (other systems: shop, app, call centre), one typed column
-- per attribute type; the compiler picks the column by the declared type.
CREATE TABLE client_attributes (
    code         text NOT NULL REFERENCES segment_attributes ON DELETE CASCADE,
    client_id    bigint NOT NULL REFERENCES clients,
    value_text   text,
    value_number numeric,
    value_date   date,
    value_bool   boolean,
    value_list   text[],
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (code, client_id),
    CHECK (num_nonnulls(value_text, value_number, value_date, value_bool, value_list) = 1)
);
CREATE INDEX client_attributes_client_idx ON client_attributes (client_id);

CREATE TABLE segments (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description     text NOT NULL DEFAULT '' CHECK (length(description) <= 2000),
    -- static: members are a snapshot taken at materialised_at; dynamic: kept current.
    kind            text NOT NULL CHECK (kind IN ('static', 'dynamic')),
    -- The condition tree (NULL for a segment made by a set operation).
    condition       jsonb,
    -- A set operation's origin: {"op": "union", "left": 1, "right": 2}.
    origin          jsonb,
    -- The condition uses relative dates: a dynamic one is re-evaluated whole once a day.
    relative_dates  boolean NOT NULL DEFAULT false,
    member_count    bigint NOT NULL DEFAULT 0,
    materialised_at timestamptz,
    created_by      text NOT NULL,
    created_by_id   bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (num_nonnulls(condition, origin) = 1),
    CHECK (origin IS NULL OR kind = 'static')
);
CREATE INDEX segments_dynamic_idx ON segments (id) WHERE kind = 'dynamic';

CREATE TABLE segment_members (
    segment_id bigint NOT NULL REFERENCES segments ON DELETE CASCADE,
    client_id  bigint NOT NULL,
    PRIMARY KEY (segment_id, client_id)
);

-- Stop lists of whole segments (0004) keep segment_id without a foreign key: the API
-- checks the segment exists when an entry is made, and a segment with entries cannot be
-- deleted (crm.segments.store.delete).

-- Clients whose data changed since dynamic segments were last brought up to date.
-- version moves on every new mark, so a refresh that read a mark cannot delete a newer one.
CREATE TABLE segment_dirty_clients (
    client_id bigint PRIMARY KEY,
    version   bigint NOT NULL DEFAULT 1,
    marked_at timestamptz NOT NULL DEFAULT now()
);

-- Marking is statement-level, over transition tables: a mass update of a million rows
-- costs one INSERT ... SELECT, and nothing at all while no dynamic segment exists.
CREATE FUNCTION segments_mark_dirty(ids bigint[]) RETURNS void
    LANGUAGE sql AS $$
    INSERT INTO segment_dirty_clients AS d (client_id)
    SELECT DISTINCT id FROM unnest(ids) AS t(id) WHERE id IS NOT NULL
    ON CONFLICT (client_id) DO UPDATE SET version = d.version + 1, marked_at = now()
$$;

CREATE FUNCTION segments_dynamic_exist() RETURNS boolean
    LANGUAGE sql STABLE AS $$ SELECT EXISTS (SELECT 1 FROM segments WHERE kind = 'dynamic') $$;

-- clients, consents, client_attributes, channel_usage: every touched client.
CREATE FUNCTION segments_dirty_by_client_new() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF segments_dynamic_exist() THEN
        PERFORM segments_mark_dirty(ARRAY(SELECT client_id FROM new_rows));
    END IF;
    RETURN NULL;
END $$;
CREATE FUNCTION segments_dirty_by_client_old() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF segments_dynamic_exist() THEN
        PERFORM segments_mark_dirty(ARRAY(SELECT client_id FROM old_rows));
    END IF;
    RETURN NULL;
END $$;
-- clients has "id", not "client_id".
CREATE FUNCTION segments_dirty_clients_new() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF segments_dynamic_exist() THEN
        PERFORM segments_mark_dirty(ARRAY(SELECT id FROM new_rows));
    END IF;
    RETURN NULL;
END $$;
CREATE FUNCTION segments_dirty_clients_old() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF segments_dynamic_exist() THEN
        PERFORM segments_mark_dirty(ARRAY(SELECT id FROM old_rows));
    END IF;
    RETURN NULL;
END $$;
-- accounts: only when a catalogued column (or the owner) changed; both owners on a move.
CREATE FUNCTION segments_dirty_accounts_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF segments_dynamic_exist() THEN
        PERFORM segments_mark_dirty(ARRAY(
            SELECT unnest(ARRAY[n.client_id, o.client_id])
            FROM new_rows n JOIN old_rows o ON o.id = n.id
            WHERE (n.client_id, n.region_code, n.consumer_type, n.registers, n.destroyed_housing,
                   n.tariff_code, n.status, n.city, n.opened_at)
                  IS DISTINCT FROM
                  (o.client_id, o.region_code, o.consumer_type, o.registers, o.destroyed_housing,
                   o.tariff_code, o.status, o.city, o.opened_at)));
    END IF;
    RETURN NULL;
END $$;
-- billing_snapshots: keyed by account; a card refresh that changes nothing catalogued marks nobody.
CREATE FUNCTION segments_dirty_billing_new() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF segments_dynamic_exist() THEN
        PERFORM segments_mark_dirty(ARRAY(
            SELECT a.client_id FROM new_rows n JOIN accounts a ON a.id = n.account_id));
    END IF;
    RETURN NULL;
END $$;
CREATE FUNCTION segments_dirty_billing_old() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF segments_dynamic_exist() THEN
        PERFORM segments_mark_dirty(ARRAY(
            SELECT a.client_id FROM old_rows o JOIN accounts a ON a.id = o.account_id));
    END IF;
    RETURN NULL;
END $$;
CREATE FUNCTION segments_dirty_billing_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF segments_dynamic_exist() THEN
        PERFORM segments_mark_dirty(ARRAY(
            SELECT a.client_id
            FROM new_rows n JOIN old_rows o ON o.account_id = n.account_id
                 JOIN accounts a ON a.id = n.account_id
            WHERE (n.balance, n.debt, n.last_charge_amount, n.last_payment_amount, n.last_payment_at,
                   n.due_date)
                  IS DISTINCT FROM
                  (o.balance, o.debt, o.last_charge_amount, o.last_payment_amount, o.last_payment_at,
                   o.due_date)));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER segments_dirty_ins AFTER INSERT ON clients REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION segments_dirty_clients_new();
CREATE TRIGGER segments_dirty_upd AFTER UPDATE ON clients REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION segments_dirty_clients_new();
CREATE TRIGGER segments_dirty_del AFTER DELETE ON clients REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION segments_dirty_clients_old();

CREATE TRIGGER segments_dirty_ins AFTER INSERT ON accounts REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION segments_dirty_by_client_new();
CREATE TRIGGER segments_dirty_upd AFTER UPDATE ON accounts
    REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION segments_dirty_accounts_update();
CREATE TRIGGER segments_dirty_del AFTER DELETE ON accounts REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION segments_dirty_by_client_old();

CREATE TRIGGER segments_dirty_ins AFTER INSERT ON billing_snapshots REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION segments_dirty_billing_new();
CREATE TRIGGER segments_dirty_upd AFTER UPDATE ON billing_snapshots
    REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION segments_dirty_billing_update();
CREATE TRIGGER segments_dirty_del AFTER DELETE ON billing_snapshots REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION segments_dirty_billing_old();

CREATE TRIGGER segments_dirty_ins AFTER INSERT ON consents REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION segments_dirty_by_client_new();
CREATE TRIGGER segments_dirty_upd AFTER UPDATE ON consents REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION segments_dirty_by_client_new();
CREATE TRIGGER segments_dirty_del AFTER DELETE ON consents REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION segments_dirty_by_client_old();

CREATE TRIGGER segments_dirty_ins AFTER INSERT ON client_attributes REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION segments_dirty_by_client_new();
CREATE TRIGGER segments_dirty_upd AFTER UPDATE ON client_attributes REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION segments_dirty_by_client_new();
CREATE TRIGGER segments_dirty_del AFTER DELETE ON client_attributes REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION segments_dirty_by_client_old();

CREATE TRIGGER segments_dirty_ins AFTER INSERT ON channel_usage REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION segments_dirty_by_client_new();
CREATE TRIGGER segments_dirty_upd AFTER UPDATE ON channel_usage REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION segments_dirty_by_client_new();
CREATE TRIGGER segments_dirty_del AFTER DELETE ON channel_usage REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION segments_dirty_by_client_old();

INSERT INTO permissions (code, description_uk, description_en) VALUES
    ('segments.read',   'Переглядати сегменти, їх учасників та каталог атрибутів',
                        'View segments, their members and the attribute catalogue'),
    ('segments.manage', 'Створювати, змінювати та об''єднувати сегменти, імпортувати атрибути',
                        'Create, change and combine segments; declare and import attributes');

INSERT INTO role_permissions (role_code, permission_code) VALUES
    ('admin', 'segments.read'), ('admin', 'segments.manage'),
    ('marketer', 'segments.read'), ('marketer', 'segments.manage'),
    ('analyst', 'segments.read'), ('supervisor', 'segments.read');
