-- Permissions of the Client 360 card (issue 4) and the integration role.
--
-- clients.read     the card, search, timeline, readings: every front-line role.
-- clients.pii      passport data unmasked: the service-centre desk checks documents,
--                  the contact centre sees it masked.
-- clients.manage   contacts, links, readings entered by an operator.
-- clients.mass_edit and contacts.merge change many records at once: supervisors.
-- cti.events / channels.ingest are posted by systems (VICIdial, cabinet, app, shop,
-- chatbot), which log in as users of the role 'integration'.

INSERT INTO roles (code, name_uk, name_en, description) VALUES
    ('integration', 'Інтеграція', 'Integration',
     'Systems posting events: telephony (CTI), personal cabinet, mobile app, shop, chatbot');

INSERT INTO permissions (code, description_uk, description_en) VALUES
    ('clients.read',      'Переглядати картку клієнта, пошук, стрічку подій',
                          'View the client card, search and the timeline'),
    ('clients.pii',       'Бачити паспортні дані без маскування',
                          'See passport data unmasked'),
    ('clients.manage',    'Змінювати контакти, зв''язки та показники лічильників',
                          'Change contacts, links and meter readings'),
    ('clients.mass_edit', 'Масово змінювати картки клієнтів',
                          'Mass-edit client cards'),
    ('contacts.merge',    'Об''єднувати дублікати контактів',
                          'Merge duplicate contacts'),
    ('cti.events',        'Надсилати події телефонії (VICIdial)',
                          'Post telephony (VICIdial) call events'),
    ('channels.ingest',   'Надсилати взаємодії з цифрових каналів',
                          'Post digital-channel interactions and orders');

INSERT INTO role_permissions (role_code, permission_code) VALUES
    ('admin', 'clients.read'), ('admin', 'clients.pii'), ('admin', 'clients.manage'),
    ('admin', 'clients.mass_edit'), ('admin', 'contacts.merge'), ('admin', 'cti.events'),
    ('admin', 'channels.ingest'),
    ('supervisor', 'clients.read'), ('supervisor', 'clients.pii'), ('supervisor', 'clients.manage'),
    ('supervisor', 'clients.mass_edit'), ('supervisor', 'contacts.merge'),
    ('operator_cc', 'clients.read'), ('operator_cc', 'clients.manage'),
    ('operator_cos', 'clients.read'), ('operator_cos', 'clients.pii'), ('operator_cos', 'clients.manage'),
    ('analyst', 'clients.read'),
    ('integration', 'cti.events'), ('integration', 'channels.ingest');
