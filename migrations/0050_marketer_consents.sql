-- The marketer's workspace (issue 14, "Web UI, part 2"): consents and stop lists are the
-- marketer's pages (IC-07, IC-08), so the marketer records consents and imports them in
-- bulk, like the operators who record a client's choice on the card.
INSERT INTO role_permissions (role_code, permission_code) VALUES
    ('marketer', 'consents.manage')
ON CONFLICT DO NOTHING;
