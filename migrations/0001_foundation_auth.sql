-- Foundation: privileges of the application role, users, roles and the permission matrix.
--
-- Two database roles (created by scripts/ensure-services.sh, or by a DBA in production):
--   * the owner (HERALD_DATABASE_ADMIN_URL) runs migrations and the bulk seeder;
--   * herald_app is the role the running application uses (HERALD_DATABASE_URL, or any
--     login role that is a member of herald_app). It may read and write data tables but
--     cannot change the schema, and cannot UPDATE or DELETE the audit journal (0002).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'herald_app') THEN
        RAISE EXCEPTION 'database role herald_app is missing: run scripts/ensure-services.sh '
                        'or CREATE ROLE herald_app LOGIN PASSWORD ... as a superuser';
    END IF;
END $$;

CREATE EXTENSION IF NOT EXISTS pg_trgm;

GRANT USAGE ON SCHEMA public TO herald_app;
-- schema_migrations is made by the runner before this file runs; the app may read it.
GRANT SELECT ON schema_migrations TO herald_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO herald_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO herald_app;

-- Search normalisation shared by every searchable column: case-folded with the
-- Ukrainian ICU rules (the database's own locale may be C), apostrophe and quote
-- variants removed (Мар'яна = Марʼяна = Мар’яна = Маряна), runs of spaces collapsed.
CREATE FUNCTION herald_search_norm(t text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN btrim(regexp_replace(
        lower(translate(t, E'\u02BC\u2019\u2018\u0027\u0060\u00B4\u201C\u201D\u00AB\u00BB\u0022', '')
              COLLATE "uk-x-icu"),
        '\s+', ' ', 'g'));

CREATE TABLE roles (
    code        text PRIMARY KEY CHECK (code ~ '^[a-z][a-z0-9_]{1,62}$'),
    name_uk     text NOT NULL,
    name_en     text NOT NULL,
    description text NOT NULL DEFAULT ''
);

CREATE TABLE permissions (
    code           text PRIMARY KEY CHECK (code ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$'),
    description_uk text NOT NULL,
    description_en text NOT NULL
);

CREATE TABLE role_permissions (
    role_code       text NOT NULL REFERENCES roles ON DELETE CASCADE,
    permission_code text NOT NULL REFERENCES permissions ON DELETE CASCADE,
    PRIMARY KEY (role_code, permission_code)
);

CREATE TABLE users (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    login               text NOT NULL CHECK (login ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{2,63}$'),
    full_name           text NOT NULL CHECK (length(full_name) BETWEEN 1 AND 200),
    email               text,
    password_hash       text NOT NULL,
    is_active           boolean NOT NULL DEFAULT true,
    failed_logins       integer NOT NULL DEFAULT 0,
    locked_until        timestamptz,
    last_login_at       timestamptz,
    password_changed_at timestamptz NOT NULL DEFAULT now(),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_login_key ON users (lower(login));

CREATE TABLE user_roles (
    user_id   bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    role_code text NOT NULL REFERENCES roles,
    PRIMARY KEY (user_id, role_code)
);
CREATE INDEX user_roles_role_idx ON user_roles (role_code);

-- Opaque bearer tokens; only their SHA-256 is stored, so a database dump leaks no session.
CREATE TABLE sessions (
    token_hash   bytea PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    client_ip    inet,
    user_agent   text
);
CREATE INDEX sessions_user_idx ON sessions (user_id);
CREATE INDEX sessions_expires_idx ON sessions (expires_at);

INSERT INTO roles (code, name_uk, name_en, description) VALUES
    ('operator_cc',  'Оператор контакт-центру',     'Contact-centre operator', 'Handles calls and chats; sees the client card'),
    ('operator_cos', 'Оператор ЦОС',                'Service-centre operator', 'Serves walk-in clients at a service centre'),
    ('supervisor',   'Супервізор',                  'Supervisor',              'Watches queues, SLA and agents; reassigns work'),
    ('marketer',     'Маркетолог',                  'Marketer',                'Builds segments, templates and campaigns'),
    ('analyst',      'Аналітик',                    'Analyst',                 'Reads reports and exports'),
    ('admin',        'Адміністратор',               'Administrator',           'Configures Herald, users and rights');

INSERT INTO permissions (code, description_uk, description_en) VALUES
    ('users.read',   'Переглядати користувачів',            'View users'),
    ('users.manage', 'Створювати та змінювати користувачів', 'Create and change users'),
    ('rbac.read',    'Переглядати ролі та права',           'View roles and permissions'),
    ('rbac.manage',  'Змінювати матрицю прав ролей',        'Change the role-permission matrix'),
    ('audit.read',   'Читати журнал аудиту',                'Read the audit journal');

INSERT INTO role_permissions (role_code, permission_code) VALUES
    ('admin', 'users.read'), ('admin', 'users.manage'), ('admin', 'rbac.read'),
    ('admin', 'rbac.manage'), ('admin', 'audit.read'),
    ('supervisor', 'users.read'), ('supervisor', 'audit.read'),
    ('analyst', 'audit.read');
