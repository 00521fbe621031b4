-- Permissions of the send-rules endpoints (admin_api/views/rules_*.py): rate limits,
-- quiet hours, air-raid alerts, stop lists and client consents.
--
-- alerts.manage is separate from rules.manage so that an integration account (the
-- regional alert feed) can be given a role that switches alerts and nothing else.
-- Consents are separate from the rules because they are the client's own choices,
-- recorded on their behalf (by phone, from the cabinet, from an unsubscribe link).

INSERT INTO permissions (code, description_uk, description_en) VALUES
    ('rules.read',       'Переглядати правила розсилок: ліміти, тихі години, тривоги, стоп-листи',
                         'View send rules: rate limits, quiet hours, air-raid alerts, stop lists'),
    ('rules.manage',     'Змінювати ліміти швидкості та тихі години',
                         'Change rate limits and quiet hours'),
    ('alerts.manage',    'Вмикати та вимикати повітряні тривоги по регіонах',
                         'Switch air-raid alerts on and off per region'),
    ('stoplists.manage', 'Додавати та видаляти записи стоп-листів',
                         'Add and remove stop-list entries'),
    ('consents.read',    'Переглядати згоди клієнтів на повідомлення',
                         'View clients'' consents to messages'),
    ('consents.manage',  'Записувати згоди та відмови клієнтів',
                         'Record clients'' consents and opt-outs');

INSERT INTO role_permissions (role_code, permission_code) VALUES
    ('admin', 'rules.read'), ('admin', 'rules.manage'), ('admin', 'alerts.manage'),
    ('admin', 'stoplists.manage'), ('admin', 'consents.read'), ('admin', 'consents.manage'),
    ('supervisor', 'rules.read'), ('supervisor', 'consents.read'),
    ('marketer', 'rules.read'), ('marketer', 'consents.read'), ('marketer', 'stoplists.manage'),
    -- Operators take a client's opt-in or opt-out by phone or at the desk (source 'operator').
    ('operator_cc', 'consents.read'), ('operator_cc', 'consents.manage'),
    ('operator_cos', 'consents.read'), ('operator_cos', 'consents.manage');
