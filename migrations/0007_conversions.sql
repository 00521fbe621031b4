-- Conversion events posted by client systems (billing: "paid", shop: "ordered").
INSERT INTO permissions (code, description_uk, description_en) VALUES
    ('campaigns.conversions', 'Надсилати події конверсії розсилок', 'Post campaign conversion events');
INSERT INTO role_permissions (role_code, permission_code) VALUES
    ('admin', 'campaigns.conversions'), ('marketer', 'campaigns.conversions');
