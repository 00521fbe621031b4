-- Some active user must always hold both rbac.manage and users.manage: without one, roles
-- and users can be repaired only through SQL. The rule is kept here, where every path
-- passes (a role's permissions, a user's roles, deactivating a user; deleting one removes
-- their roles), and checked at commit, so a transaction may replace a user's roles or a
-- role's permissions wholesale. Only a change that could have removed an administrator is
-- checked: a database that never had one (a fresh install before its first user) is not
-- held to it.

CREATE FUNCTION herald_administrator_exists() RETURNS boolean
    LANGUAGE sql STABLE
    AS $$
    SELECT EXISTS (
        SELECT 1 FROM users u
        JOIN user_roles ur ON ur.user_id = u.id
        JOIN role_permissions rp ON rp.role_code = ur.role_code
        WHERE u.is_active AND rp.permission_code IN ('rbac.manage', 'users.manage')
        GROUP BY u.id
        HAVING count(DISTINCT rp.permission_code) = 2)
    $$;

CREATE FUNCTION herald_keep_an_administrator() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    mattered boolean;
BEGIN
    -- Could the changed row have made someone an administrator? (As things stand at commit.)
    IF TG_TABLE_NAME = 'role_permissions' THEN
        mattered := EXISTS (SELECT 1 FROM user_roles ur JOIN users u ON u.id = ur.user_id
                            WHERE ur.role_code = OLD.role_code AND u.is_active);
    ELSIF TG_TABLE_NAME = 'user_roles' THEN
        mattered := EXISTS (SELECT 1 FROM role_permissions rp
                            WHERE rp.role_code = OLD.role_code
                              AND rp.permission_code IN ('rbac.manage', 'users.manage'));
    ELSE  -- users: an active user deactivated
        mattered := EXISTS (SELECT 1 FROM user_roles ur JOIN role_permissions rp USING (role_code)
                            WHERE ur.user_id = OLD.id
                              AND rp.permission_code IN ('rbac.manage', 'users.manage'));
    END IF;
    IF mattered AND NOT herald_administrator_exists() THEN
        RAISE EXCEPTION 'no active user would be left able to manage roles and users'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'herald_keep_an_administrator',
                  HINT = 'grant rbac.manage and users.manage to another active user first';
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER keep_an_administrator
    AFTER UPDATE OR DELETE ON role_permissions
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (OLD.permission_code IN ('rbac.manage', 'users.manage'))
    EXECUTE FUNCTION herald_keep_an_administrator();

CREATE CONSTRAINT TRIGGER keep_an_administrator
    AFTER UPDATE OR DELETE ON user_roles
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    EXECUTE FUNCTION herald_keep_an_administrator();

CREATE CONSTRAINT TRIGGER keep_an_administrator
    AFTER UPDATE OF is_active ON users
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (OLD.is_active AND NOT NEW.is_active)
    EXECUTE FUNCTION herald_keep_an_administrator();
