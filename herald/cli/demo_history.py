"""An operator-facing history for the demo stand: three months of cases through their
whole lives on every channel, the calls that became cases, messages sent to clients with
their receipts, meter readings, contact changes in the card's journal, hand-off tasks,
applications, digital-channel use, shop orders, surveys and outbound calls.

Set-based SQL, one transaction, a few seconds for the 10,000-client demo stand: a sample
of clients (every third id among the first ones, so two clients in three keep an empty
card for the "nothing yet" view) gets one to three cases each. Every time is relative to
Herald's clock (``now``), so the stand always looks fresh; nothing is newer than an hour
(so no client notification is queued for it, see ``case_events_enqueue_notify``).

A case's status follows from its own timeline: it is created during working hours,
first answered (by a reply and New -> In Progress) within or after its first-response
deadline, may wait On Hold for the client, is resolved within or after its resolution
deadline and closed by the operator or, after 72 hours, by the automation. Whatever of
that lies in the future has not happened yet, so the recent cases are the open ones in
the queue now. The deadlines follow the policy ``case_sla_plan`` chooses, on its
calendar's working time (time On Hold extends them, as the update trigger would); a missed
deadline is a recorded breach (``*_breached_at`` and ``case_sla_breaches``). Some cases were
handed off to another department (``case_tasks``: done where the case was resolved since,
open, some overdue, where it is still open). The open
cases are on the SLA evaluator's schedule (the insert trigger puts them there), so the
evaluator's warnings and escalations follow as for any case.

Idempotent: the run leaves an entry in the audit journal (``demo_stand``/``history``)
and a second run finds it and does nothing. Development only, like the demo users.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import secrets
import time
from decimal import Decimal

import asyncpg
import msgspec

from crm import activity, users
from crm.activity import (
    Answer,
    ChannelEvent,
    OutboundCallEvent,
    ShopItem,
    ShopOrderSpec,
    SurveyEvent,
)
from crm.cases import agents, groups
from crm.users import PasswordPolicy
from herald import clock
from herald.audit import Actor
from herald.cli.demo_setup import TEMPLATES

log = logging.getLogger(__name__)

MARK_ENTITY = ("demo_stand", "history")
ACTOR = "demo-setup"


class DemoHistory(msgspec.Struct):
    """What one run created (all zero when the stand already had its history)."""

    clients: int = 0
    cases: int = 0
    open_cases: int = 0
    calls: int = 0
    messages: int = 0
    readings: int = 0
    contact_changes: int = 0
    tasks: int = 0
    applications: int = 0
    digital_activity: int = 0


# pg_temp.dh_r(id, stream): a deterministic number in [0, 1) per row and purpose.
_FUNCTIONS = """
CREATE FUNCTION pg_temp.dh_r(bigint, bigint) RETURNS double precision
    LANGUAGE sql IMMUTABLE AS
    $$ SELECT (hashint8extended($1, $2) & 1073741823)::double precision / 1073741824 $$;
"""

# Topics: (code of the category, type, priority, subject, what the client wrote, the
# reply, the resolution). Channels: (channel, weight).
_SETUP = """
CREATE TEMP TABLE dh_topics (n int, category text, case_type text, priority text, subject text,
                             body text, reply text, resolution text) ON COMMIT DROP;
INSERT INTO dh_topics VALUES
 (0, 'billing.payment', 'financial', 'normal', 'Оплата не зарахована',
  'Оплатив рахунок за газ через банк, але в кабінеті оплата досі не відображається.',
  'Дякуємо за звернення. Перевіряємо платіж з банком, відповімо протягом дня.',
  'Платіж знайдено та зараховано на особовий рахунок.'),
 (1, 'billing.debt', 'financial', 'normal', 'Питання щодо заборгованості',
  'Прийшло повідомлення про борг, але я все сплачую вчасно. Звідки заборгованість?',
  'Перевіряємо нарахування за останні місяці.',
  'Заборгованість виникла через нарахування за лютий; надано графік розстрочки.'),
 (2, 'billing.charges', 'financial', 'low', 'Перерахунок нарахувань',
  'Прошу перерахувати нарахування за грудень, показники були передані вчасно.',
  'Звернення передано до фінансового відділу.',
  'Виконано перерахунок за грудень, різницю враховано в наступному рахунку.'),
 (3, 'meter.reading', 'informational', 'low', 'Передача показників',
  'Не вдається передати показники лічильника через застосунок.',
  'Показники прийнято оператором, дякуємо.',
  'Показники внесено; застосунок оновлено, помилка більше не повторюється.'),
 (4, 'meter.verification', 'technical', 'normal', 'Повірка лічильника',
  'Коли потрібно робити повірку лічильника і хто її проводить?',
  'Надіслали інформацію про повірку, уточнюємо дату в оператора ГРМ.',
  'Повідомлено дату повірки; клієнта записано на візит майстра.'),
 (5, 'supply.outage', 'technical', 'high', 'Немає газу',
  'З ранку немає газу в будинку, сусіди теж без газу.',
  'Заявку передано аварійній службі оператора ГРМ.',
  'Газопостачання відновлено після ремонту на мережі.'),
 (6, 'supply.leak', 'technical', 'urgent', 'Запах газу в під''їзді',
  'У під''їзді сильно пахне газом.',
  'Аварійну бригаду викликано, не користуйтеся відкритим вогнем.',
  'Бригада усунула витік на стояку.'),
 (7, 'account.update', 'informational', 'normal', 'Актуалізація даних',
  'Прошу змінити номер телефону та e-mail для зв''язку.',
  'Дані для зв''язку оновлено.',
  'Контактні дані оновлено в картці клієнта.'),
 (8, 'account.owner_change', 'informational', 'normal', 'Зміна власника',
  'Купили квартиру, потрібно переоформити особовий рахунок на нового власника.',
  'Надіслали перелік документів для переоформлення.',
  'Договір переоформлено на нового власника.'),
 (9, 'info', 'informational', 'low', 'Графік роботи ЦОС',
  'Підкажіть, будь ласка, графік роботи центру обслуговування.',
  'Надіслали адресу та графік роботи ЦОС.',
  'Надано довідкову інформацію.');

-- The SLA policy of each topic (the same choice as case_sla_plan makes for a case).
CREATE TEMP TABLE dh_policies ON COMMIT DROP AS
SELECT tp.n, pl.policy_id, sp.calendar_id, sp.first_response_minutes, sp.resolution_minutes,
       sp.warning_percent
FROM dh_topics tp JOIN case_categories cat ON cat.code = tp.category
CROSS JOIN LATERAL case_sla_plan(tp.case_type, tp.priority, cat.id, $1::timestamptz, 0) pl
LEFT JOIN case_sla_policies sp ON sp.id = pl.policy_id;

"""

_CLIENTS = """
CREATE TEMP TABLE dh_clients ON COMMIT DROP AS
SELECT row_number() OVER (ORDER BY c.id) AS n, c.id AS client_id, a.id AS account_id,
       a.or_number, ct.id AS contact_id, ct.phone, ct.email
FROM clients c
JOIN LATERAL (SELECT id, or_number FROM accounts WHERE client_id = c.id ORDER BY id LIMIT 1) a ON true
JOIN LATERAL (SELECT id, phone, email FROM contacts
              WHERE client_id = c.id AND is_active AND phone IS NOT NULL ORDER BY id LIMIT 1) ct ON true
WHERE c.id % 3 = 0
ORDER BY c.id LIMIT $1;

"""

_USERS = """
CREATE TEMP TABLE dh_users ON COMMIT DROP AS
SELECT (SELECT id FROM users WHERE login = 'operator.cc') AS cc,
       (SELECT id FROM users WHERE login = 'operator.cos') AS cos,
       (SELECT array_agg(id ORDER BY id) FROM users WHERE login = ANY($1::text[])) AS cc_pool,
       (SELECT array_agg(id ORDER BY id) FROM users WHERE login = ANY($2::text[])) AS cos_pool;
"""

# One row per case with its whole planned life; status and times follow from "now".
_PLAN = """
CREATE TEMP TABLE dh_plan ON COMMIT DROP AS
WITH raw AS MATERIALIZED (
    SELECT c.*, g.i, c.client_id * 10 + g.i AS key,
           -- created on a working day between 08:00 and 19:00 Kyiv time, up to 90 days back
           ((date_trunc('day', $1::timestamptz AT TIME ZONE herald_business_tz())
             - floor(pg_temp.dh_r(c.client_id * 10 + g.i, 1) ^ 1.25 * 90) * interval '1 day'
             + interval '8 hours' + pg_temp.dh_r(c.client_id * 10 + g.i, 2) * interval '11 hours')
            AT TIME ZONE herald_business_tz()) AS t0
    FROM dh_clients c
    CROSS JOIN LATERAL generate_series(0, (pg_temp.dh_r(c.client_id, 3) < 0.35)::int
                                          + (pg_temp.dh_r(c.client_id, 4) < 0.12)::int) AS g(i)
), timed AS MATERIALIZED (
    SELECT r.*,
           CASE WHEN r.t0 > $1::timestamptz - interval '90 minutes' THEN r.t0 - interval '1 day'
                ELSE r.t0 END AS created_at,
           pg_temp.dh_r(r.key, 5) AS rc
    FROM raw r
), chosen AS MATERIALIZED (
    SELECT t.*,
           CASE WHEN t.rc < 0.34 THEN 'call' WHEN t.rc < 0.46 THEN 'viber'
                WHEN t.rc < 0.52 THEN 'telegram' WHEN t.rc < 0.60 THEN 'site'
                WHEN t.rc < 0.70 THEN 'cabinet' WHEN t.rc < 0.82 THEN 'email'
                WHEN t.rc < 0.89 THEN 'app' ELSE 'walk_in' END AS channel,
           tp.category, tp.case_type, tp.priority, tp.subject, tp.body, tp.reply, tp.resolution,
           cat.id AS category_id, tp.n AS topic_n
    FROM timed t
    -- a gas leak is rare: most of its share goes to meter readings
    JOIN dh_topics tp ON tp.n = CASE WHEN floor(pg_temp.dh_r(t.key, 7) * 10)::int = 6
                                      AND pg_temp.dh_r(t.key, 6) < 0.8
                                     THEN 3 ELSE floor(pg_temp.dh_r(t.key, 7) * 10)::int END
    JOIN case_categories cat ON cat.code = tp.category
), routed AS MATERIALIZED (
    SELECT ch.*,
           CASE WHEN ch.channel = 'walk_in' THEN 'service_centre'
                WHEN ch.case_type = 'financial' THEN 'finance'
                WHEN ch.case_type = 'technical' THEN 'technical'
                WHEN pg_temp.dh_r(ch.key, 8) < 0.2 THEN 'cc_l2' ELSE 'cc_l1' END AS group_code,
           -- a missed call is a call back; an answered one the operator took
           ch.channel = 'call' AND pg_temp.dh_r(ch.key, 9) < 0.3 AS missed,
           po.policy_id, po.calendar_id, po.first_response_minutes AS fr_min,
           po.resolution_minutes AS res_min, po.warning_percent,
           business_cum(po.calendar_id, ch.created_at) AS base,
           pg_temp.dh_r(ch.key, 10) < 0.13 AS late_reply,
           pg_temp.dh_r(ch.key, 11) < 0.16 AS late_resolution,
           pg_temp.dh_r(ch.key, 12) < 0.15 AS waits
    FROM chosen ch JOIN dh_policies po ON po.n = ch.topic_n
), planned AS MATERIALIZED (
    SELECT r.*, business_instant(r.calendar_id, r.base + r.fr_min * 60.0) AS fr_due,
           business_instant(r.calendar_id, r.base + r.res_min * 60.0) AS res_due
    FROM routed r
), assigned AS MATERIALIZED (
    SELECT r.*, CASE WHEN r.group_code = 'service_centre' THEN u.cos
                     WHEN r.group_code = 'finance' AND pg_temp.dh_r(r.key, 13) < 0.5 THEN u.cos
                     ELSE u.cc END AS agent_id,
           r.created_at + (1 + pg_temp.dh_r(r.key, 14) * 9) * interval '1 minute' AS assigned_plan,
           -- some of the last day's cases nobody has answered yet: New, in the queue
           CASE WHEN r.created_at > $1::timestamptz - interval '30 hours'
                     AND pg_temp.dh_r(r.key, 22) < 0.2 THEN r.created_at + interval '60 days'
                WHEN r.late_reply THEN r.fr_due + (0.2 + pg_temp.dh_r(r.key, 15) * 3) * interval '1 hour'
                ELSE r.created_at + (0.1 + 0.7 * pg_temp.dh_r(r.key, 15))
                                    * (coalesce(r.fr_due, r.created_at + interval '2 hours') - r.created_at)
           END AS fr_plan
    FROM planned r CROSS JOIN dh_users u
), held AS MATERIALIZED (
    SELECT a.*,
           a.fr_plan + (0.3 + pg_temp.dh_r(a.key, 16) * 2) * interval '1 hour' AS hold_plan,
           a.fr_plan + (3 + pg_temp.dh_r(a.key, 17) * 30) * interval '1 hour' AS resume_plan
    FROM assigned a
), resolved AS MATERIALIZED (
    SELECT h.*, CASE WHEN h.waits AND h.calendar_id IS NOT NULL
                     THEN greatest(business_between(h.calendar_id, h.hold_plan, h.resume_plan), 0)
                     ELSE 0 END AS held_seconds
    FROM held h
), replanned AS MATERIALIZED (
    -- time On Hold moves the deadlines by the working time spent waiting
    SELECT r.*,
           business_instant(r.calendar_id, r.base + r.held_seconds + r.fr_min * 60.0) AS fr_due2,
           business_instant(r.calendar_id, r.base + r.held_seconds
                                           + r.fr_min * 0.6 * r.warning_percent) AS fr_warn,
           business_instant(r.calendar_id, r.base + r.held_seconds + r.res_min * 60.0) AS res_due2,
           business_instant(r.calendar_id, r.base + r.held_seconds
                                           + r.res_min * 0.6 * r.warning_percent) AS res_warn
    FROM resolved r
), finished AS MATERIALIZED (
    SELECT p.*,
           CASE WHEN p.late_resolution
                THEN p.res_due2 + (1 + pg_temp.dh_r(p.key, 18) * 40) * interval '1 hour'
                ELSE greatest(CASE WHEN p.waits THEN p.resume_plan ELSE p.fr_plan END, p.fr_plan)
                     + (0.1 + 0.8 * pg_temp.dh_r(p.key, 19))
                       * greatest(coalesce(p.res_due2, p.fr_plan + interval '1 day')
                                  - greatest(CASE WHEN p.waits THEN p.resume_plan ELSE p.fr_plan END,
                                             p.fr_plan),
                                  interval '30 minutes')
           END AS resolved_plan
    FROM replanned p
)
SELECT f.*,
       f.resolved_plan + CASE WHEN pg_temp.dh_r(f.key, 20) < 0.6
                              THEN (1 + pg_temp.dh_r(f.key, 21) * 30) * interval '1 hour'
                              ELSE interval '72 hours' + interval '10 minutes' END AS closed_plan,
       pg_temp.dh_r(f.key, 20) >= 0.6 AS closed_by_automation
FROM finished f;

-- What has happened by now (an hour ago: nothing newer).
ALTER TABLE dh_plan ADD COLUMN horizon timestamptz, ADD COLUMN status text,
    ADD COLUMN first_response_at timestamptz, ADD COLUMN on_hold_since timestamptz,
    ADD COLUMN resolved_at timestamptz, ADD COLUMN closed_at timestamptz,
    ADD COLUMN assignee_id bigint, ADD COLUMN assigned_at timestamptz,
    ADD COLUMN status_changed_at timestamptz;
UPDATE dh_plan SET horizon = $1::timestamptz - interval '1 hour';
UPDATE dh_plan SET
    first_response_at = CASE WHEN fr_plan <= horizon THEN fr_plan END,
    resolved_at = CASE WHEN resolved_plan <= horizon AND fr_plan <= horizon
                        AND (NOT waits OR resume_plan <= horizon) THEN resolved_plan END,
    on_hold_since = CASE WHEN waits AND hold_plan <= horizon AND resume_plan > horizon
                         AND fr_plan <= horizon THEN hold_plan END;
UPDATE dh_plan SET
    closed_at = CASE WHEN resolved_at IS NOT NULL AND closed_plan <= horizon THEN closed_plan END,
    assigned_at = CASE WHEN first_response_at IS NOT NULL THEN assigned_plan END;
UPDATE dh_plan SET
    status = CASE WHEN closed_at IS NOT NULL THEN 'closed'
                  WHEN resolved_at IS NOT NULL THEN 'resolved'
                  WHEN on_hold_since IS NOT NULL THEN 'on_hold'
                  WHEN first_response_at IS NOT NULL THEN 'in_progress'
                  ELSE 'new' END;
-- The demo operators keep a few open cases (below their capacity, so "take next" works
-- in the demo); the rest of the open work is their colleagues'.
WITH ranked AS (
    SELECT key, row_number() OVER (PARTITION BY agent_id ORDER BY created_at DESC) AS k
    FROM dh_plan WHERE status IN ('in_progress', 'on_hold')
)
UPDATE dh_plan p
SET agent_id = CASE WHEN p.agent_id = u.cos
                    THEN u.cos_pool[1 + p.key % array_length(u.cos_pool, 1)]
                    ELSE u.cc_pool[1 + p.key % array_length(u.cc_pool, 1)] END
FROM ranked r, dh_users u
WHERE r.key = p.key AND r.k > 3 AND p.agent_id IN (u.cc, u.cos);
-- a new case nobody has taken yet waits in its group's queue for "take next"
UPDATE dh_plan SET assignee_id = CASE WHEN assigned_at IS NOT NULL THEN agent_id END;
UPDATE dh_plan SET status_changed_at = CASE status
    WHEN 'closed' THEN closed_at WHEN 'resolved' THEN resolved_at
    WHEN 'on_hold' THEN on_hold_since
    WHEN 'in_progress' THEN CASE WHEN waits AND resume_plan <= horizon THEN resume_plan
                                 ELSE first_response_at END
    ELSE created_at END;
"""

_CASES = """
ALTER TABLE dh_plan ADD COLUMN case_id bigint, ADD COLUMN number text, ADD COLUMN call_ref text;
UPDATE dh_plan SET call_ref = 'demo-' || to_char(created_at AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISS')
                              || '-' || key
WHERE channel = 'call';

WITH ins AS (
    INSERT INTO cases (channel, client_id, account_id, identified_by, contact_phone, contact_email,
                       contact_or, chat_ref, subject, body, text_hash, category_id, case_type,
                       priority, proposed_category_id, proposed_type, proposed_priority, status,
                       status_changed_at, group_code, assignee_id, assigned_at, last_inbound_at,
                       last_outbound_at, created_by, created_by_login, created_at, updated_at,
                       sla_policy_id, first_response_due_at, first_response_warn_at,
                       resolution_due_at, resolution_warn_at, first_response_at, resolved_at,
                       sla_paused_at, sla_paused_seconds, first_response_breached_at,
                       resolution_breached_at, sla_state)
    SELECT p.channel, p.client_id, p.account_id,
           CASE WHEN p.channel IN ('call', 'viber', 'telegram') THEN 'phone'
                WHEN p.channel = 'walk_in' THEN 'operator'
                WHEN p.channel = 'email' THEN 'email' ELSE 'client_id' END,
           CASE WHEN p.channel IN ('call', 'viber', 'telegram', 'site') THEN p.phone END,
           CASE WHEN p.channel = 'email' THEN p.email END,
           CASE WHEN p.channel IN ('site', 'cabinet', 'walk_in') THEN p.or_number END,
           CASE WHEN p.channel IN ('viber', 'telegram') THEN p.channel || ':demo' || p.client_id END,
           CASE WHEN p.channel = 'call' THEN CASE WHEN p.missed THEN 'Пропущений дзвінок'
                                                  ELSE 'Вхідний дзвінок' END
                ELSE p.subject END,
           CASE WHEN p.channel = 'call' AND p.missed
                THEN 'Пропущений дзвінок з номера ' || p.phone ELSE p.body END,
           sha256(convert_to(lower(p.subject || ' ' || p.body || p.key), 'UTF8')),
           p.category_id, p.case_type, p.priority, p.category_id, p.case_type, p.priority,
           p.status, p.status_changed_at, p.group_code, p.assignee_id, p.assigned_at,
           CASE WHEN p.waits AND p.resume_plan <= p.horizon THEN p.resume_plan ELSE p.created_at END,
           p.first_response_at,
           CASE WHEN p.channel = 'walk_in' THEN u.cos END,
           CASE p.channel WHEN 'call' THEN 'cti' WHEN 'viber' THEN 'viber'
                          WHEN 'telegram' THEN 'telegram' WHEN 'walk_in' THEN 'operator.cos'
                          ELSE 'integration' END,
           p.created_at, greatest(p.status_changed_at, p.created_at),
           p.policy_id, p.fr_due2, p.fr_warn, p.res_due2, p.res_warn, p.first_response_at,
           p.resolved_at, p.on_hold_since, CASE WHEN p.waits AND p.resume_plan <= p.horizon
                                                THEN p.held_seconds ELSE 0 END,
           CASE WHEN p.fr_due2 < coalesce(p.first_response_at, p.horizon)
                THEN p.fr_due2 + interval '1 minute' END,
           CASE WHEN p.res_due2 < coalesce(p.resolved_at, p.horizon) AND p.on_hold_since IS NULL
                THEN p.res_due2 + interval '1 minute' END,
           CASE WHEN p.policy_id IS NULL THEN 'none'
                WHEN p.fr_due2 < coalesce(p.first_response_at, p.horizon)
                  OR (p.res_due2 < coalesce(p.resolved_at, p.horizon) AND p.on_hold_since IS NULL)
                THEN 'breached' ELSE 'ok' END
    FROM dh_plan p CROSS JOIN dh_users u
    ORDER BY p.created_at, p.key
    RETURNING id, number, client_id, created_at, subject
)
UPDATE dh_plan p SET case_id = ins.id, number = ins.number
FROM ins WHERE ins.client_id = p.client_id AND ins.created_at = p.created_at;

INSERT INTO case_sla_breaches (case_id, target, due_at, detected_at, policy_id, channel, case_type,
                               priority, category_id, group_code, assignee_id)
SELECT c.id, t.target, t.due, t.due + interval '1 minute', c.sla_policy_id, c.channel, c.case_type,
       c.priority, c.category_id, c.group_code, c.assignee_id
FROM dh_plan p JOIN cases c ON c.id = p.case_id
CROSS JOIN LATERAL (VALUES ('first_response', c.first_response_due_at, c.first_response_breached_at),
                           ('resolution', c.resolution_due_at, c.resolution_breached_at)) AS t(target, due, seen)
WHERE t.seen IS NOT NULL;
"""

# The case's journal, in the order things happened.
_EVENTS = """
INSERT INTO case_events (case_id, at, kind, actor_id, actor_login, channel, direction, external_id,
                         from_status, to_status, body, data)
SELECT e.case_id, e.at, e.kind, e.actor_id, e.actor_login, e.channel, e.direction, e.external_id,
       e.from_status, e.to_status, e.body, e.data
FROM (
    SELECT p.case_id, p.created_at AS at, 1 AS o, 'created' AS kind, NULL::bigint AS actor_id,
           c.created_by_login AS actor_login, p.channel, NULL AS direction, NULL AS external_id,
           NULL AS from_status, 'new' AS to_status, NULL AS body,
           jsonb_build_object('identified_by', c.identified_by, 'client_id', p.client_id,
                              'candidates', '[]'::jsonb, 'group_code', p.group_code,
                              'proposed', jsonb_build_object('category_id', p.category_id,
                                  'case_type', p.case_type, 'priority', p.priority)) AS data
    FROM dh_plan p JOIN cases c ON c.id = p.case_id
    UNION ALL
    SELECT p.case_id, p.created_at, 2, 'message', NULL, c.created_by_login, p.channel, 'in',
           CASE WHEN p.channel = 'call' THEN 'call:' || p.call_ref END, NULL, NULL, c.body,
           jsonb_build_object('subject', c.subject)
             || CASE WHEN p.channel = 'call' THEN jsonb_build_object(
                    'call_id', p.call_ref, 'outcome', CASE WHEN p.missed THEN 'missed' ELSE 'answered' END,
                    'agent_login', CASE WHEN p.missed THEN NULL ELSE 'operator.cc' END)
                ELSE '{}'::jsonb END
    FROM dh_plan p JOIN cases c ON c.id = p.case_id
    UNION ALL
    SELECT p.case_id, p.assigned_at, 3, 'assignment', NULL, 'routing', NULL, NULL, NULL, NULL, NULL,
           NULL,
           jsonb_build_object('by', 'round_robin', 'group_code', p.group_code,
                              'assignee_id', p.assignee_id, 'from_assignee_id', NULL)
    FROM dh_plan p WHERE p.assignee_id IS NOT NULL
    UNION ALL
    -- the first answer: a reply on the client's channel (a visit is answered in person)
    SELECT p.case_id, p.first_response_at, 4, 'message', p.agent_id, lu.login,
           CASE p.channel WHEN 'email' THEN 'email' WHEN 'viber' THEN 'viber'
                          WHEN 'telegram' THEN 'telegram' ELSE 'sms' END,
           'out', NULL, NULL, NULL, p.reply, jsonb_build_object('demo', true)
    FROM dh_plan p JOIN users lu ON lu.id = p.agent_id
    WHERE p.first_response_at IS NOT NULL AND p.channel <> 'walk_in'
    UNION ALL
    SELECT p.case_id, p.first_response_at, 5, 'status', p.agent_id, lu.login, NULL, NULL, NULL, 'new',
           'in_progress', NULL, NULL
    FROM dh_plan p JOIN users lu ON lu.id = p.agent_id WHERE p.first_response_at IS NOT NULL
    UNION ALL
    SELECT p.case_id, p.hold_plan, 6, 'status', p.agent_id, lu.login, NULL, NULL, NULL, 'in_progress',
           'on_hold', 'Очікуємо від клієнта уточнення та документи', NULL
    FROM dh_plan p JOIN users lu ON lu.id = p.agent_id
    WHERE p.waits AND p.first_response_at IS NOT NULL AND p.hold_plan <= p.horizon
    UNION ALL
    SELECT p.case_id, p.resume_plan, 7, 'status',
           CASE WHEN p.channel IN ('viber', 'telegram', 'email') THEN NULL ELSE p.agent_id END,
           CASE WHEN p.channel IN ('viber', 'telegram', 'email') THEN 'automation' ELSE lu.login END,
           NULL, NULL, NULL, 'on_hold', 'in_progress',
           CASE WHEN p.channel IN ('viber', 'telegram', 'email') THEN NULL
                ELSE 'Клієнт надав інформацію' END,
           CASE WHEN p.channel IN ('viber', 'telegram', 'email')
                THEN jsonb_build_object('automation', 'client_reply') END
    FROM dh_plan p JOIN users lu ON lu.id = p.agent_id
    WHERE p.waits AND p.first_response_at IS NOT NULL AND p.resume_plan <= p.horizon
    UNION ALL
    SELECT p.case_id, p.resume_plan - interval '1 second', 7, 'message', NULL, p.channel, p.channel, 'in',
           NULL, NULL, NULL, 'Надсилаю уточнення та документи.', '{}'::jsonb
    FROM dh_plan p WHERE p.waits AND p.first_response_at IS NOT NULL AND p.resume_plan <= p.horizon
      AND p.channel IN ('viber', 'telegram', 'email')
    UNION ALL
    SELECT p.case_id, p.resolved_at, 8, 'status', p.agent_id, lu.login, NULL, NULL, NULL, 'in_progress',
           'resolved', p.resolution, NULL
    FROM dh_plan p JOIN users lu ON lu.id = p.agent_id WHERE p.resolved_at IS NOT NULL
    UNION ALL
    SELECT p.case_id, p.closed_at, 9, 'status',
           CASE WHEN p.closed_by_automation THEN NULL ELSE p.agent_id END,
           CASE WHEN p.closed_by_automation THEN 'automation' ELSE lu.login END,
           NULL, NULL, NULL, 'resolved', 'closed', NULL,
           CASE WHEN p.closed_by_automation THEN jsonb_build_object('automation', 'idle') END
    FROM dh_plan p JOIN users lu ON lu.id = p.agent_id WHERE p.closed_at IS NOT NULL
    UNION ALL
    -- the SLA breaches, as the evaluator writes them
    SELECT b.case_id, b.detected_at, 10, 'sla', NULL, 'sla', NULL, NULL, NULL, NULL, NULL, NULL,
           jsonb_build_object('target', b.target, 'level', 'breached', 'due_at', b.due_at)
    FROM case_sla_breaches b JOIN dh_plan p ON p.case_id = b.case_id
    UNION ALL
    -- hand-off tasks, as crm.cases.tasks writes them
    SELECT t.case_id, t.created_at, 11, 'task', t.created_by, t.created_by_login, NULL, NULL, NULL,
           NULL, NULL, t.title,
           jsonb_build_object('action', 'create', 'task_id', t.id, 'group_code', t.group_code,
                              'assignee_id', NULL, 'due_at', t.due_at)
    FROM dh_tasks t
    UNION ALL
    SELECT t.case_id, t.closed_at, 12, 'task', t.created_by, t.created_by_login, NULL, NULL, NULL,
           NULL, NULL, t.result,
           jsonb_build_object('action', 'done', 'task_id', t.id, 'group_code', t.group_code)
    FROM dh_tasks t WHERE t.closed_at IS NOT NULL
) e
ORDER BY e.at, e.case_id, e.o;

-- The client's timeline: the case (its current status) and the call.
WITH t AS (
    INSERT INTO timeline_events (client_id, kind, at, title, status, channel, direction, ref_type,
                                 ref_id, detail, created_at, updated_at)
    SELECT p.client_id, 'case', p.created_at, c.subject, p.status, p.channel, 'in', 'case', c.number,
           jsonb_build_object('case_id', c.id, 'case_type', p.case_type,
                              'category_code', p.category, 'priority', p.priority),
           p.created_at, p.status_changed_at
    FROM dh_plan p JOIN cases c ON c.id = p.case_id
    RETURNING id, at, client_id, kind, ref_type, ref_id
)
INSERT INTO timeline_refs (client_id, kind, ref_type, ref_id, event_id, event_at)
SELECT client_id, kind, ref_type, ref_id, id, at FROM t;
"""

_CALLS = """
ALTER TABLE dh_plan ADD COLUMN call_id bigint;
WITH ins AS (
    INSERT INTO calls (call_ref, direction, phone, phone_raw, client_id, identified_by,
                       identification, agent_login, agent_user_id, campaign, ringing_at,
                       answered_at, hung_up_at, disposition, talk_time, transcript,
                       created_at, updated_at)
    SELECT p.call_ref, 'in', p.phone, p.phone, p.client_id, 'phone', 'match',
           CASE WHEN p.missed THEN NULL ELSE 'operator.cc' END,
           CASE WHEN p.missed THEN NULL ELSE u.cc END, 'CC_INBOUND',
           p.created_at - CASE WHEN p.missed THEN interval '40 seconds'
                               ELSE (60 + floor(pg_temp.dh_r(p.key, 30) * 420)) * interval '1 second'
                                    + interval '15 seconds' END,
           CASE WHEN p.missed THEN NULL
                ELSE p.created_at - (60 + floor(pg_temp.dh_r(p.key, 30) * 420)) * interval '1 second' END,
           p.created_at, CASE WHEN p.missed THEN 'NA' ELSE 'A' END,
           CASE WHEN p.missed THEN NULL ELSE 60 + floor(pg_temp.dh_r(p.key, 30) * 420)::int END,
           CASE WHEN p.missed THEN NULL ELSE p.body END, p.created_at, p.created_at
    FROM dh_plan p CROSS JOIN dh_users u WHERE p.channel = 'call'
    RETURNING id, call_ref
)
UPDATE dh_plan p SET call_id = ins.id FROM ins WHERE ins.call_ref = p.call_ref;

INSERT INTO call_events (call_id, event, at, received_at, payload)
SELECT c.id, e.event, e.at, e.at, jsonb_build_object('call_id', c.call_ref, 'phone', c.phone_raw)
FROM dh_plan p JOIN calls c ON c.id = p.call_id
CROSS JOIN LATERAL (VALUES ('ringing', c.ringing_at), ('answered', c.answered_at),
                           ('hung_up', c.hung_up_at)) AS e(event, at)
WHERE e.at IS NOT NULL;

WITH t AS (
    INSERT INTO timeline_events (client_id, kind, at, title, status, channel, direction, ref_type,
                                 ref_id, detail, created_at, updated_at)
    SELECT c.client_id, 'call', c.ringing_at, 'Вхідний дзвінок ' || c.phone,
           CASE WHEN c.answered_at IS NULL THEN 'missed' ELSE 'completed' END, 'call', 'in', 'call',
           c.id::text,
           jsonb_build_object('recording_url', NULL, 'transcript', c.transcript,
                              'disposition', c.disposition, 'talk_time', c.talk_time,
                              'agent', c.agent_login, 'answered_at', c.answered_at,
                              'hung_up_at', c.hung_up_at),
           c.ringing_at, c.hung_up_at
    FROM dh_plan p JOIN calls c ON c.id = p.call_id
    RETURNING id, at, client_id, kind, ref_type, ref_id
)
INSERT INTO timeline_refs (client_id, kind, ref_type, ref_id, event_id, event_at)
SELECT client_id, kind, ref_type, ref_id, id, at FROM t;
"""

# Hand-off tasks: work on some cases handed to another department, done where the case
# was resolved since, open (and some overdue) where it is still open.
_TASKS = """
CREATE TEMP TABLE dh_tasks ON COMMIT DROP AS
WITH picked AS (
    SELECT p.case_id, p.agent_id, p.status, p.resolved_at, p.key, p.horizon,
           p.first_response_at + interval '10 minutes' AS at,
           CASE WHEN p.case_type = 'financial' AND p.group_code <> 'finance' THEN 'finance'
                WHEN p.case_type = 'technical' AND p.group_code <> 'technical' THEN 'technical'
                WHEN p.case_type = 'informational' AND p.group_code <> 'service_centre'
                THEN 'service_centre' ELSE 'cc_l2' END AS to_group
    FROM dh_plan p
    WHERE p.first_response_at IS NOT NULL AND p.first_response_at < p.horizon - interval '1 hour'
      AND pg_temp.dh_r(p.key, 70) < CASE WHEN p.status = 'closed' THEN 0.06 ELSE 0.3 END
), titled AS (
    SELECT k.*, CASE k.to_group
                    WHEN 'finance' THEN 'Перевірити платежі та нарахування за рік'
                    WHEN 'technical' THEN 'Узгодити виїзд майстра з оператором ГРМ'
                    WHEN 'service_centre' THEN 'Прийняти документи клієнта в ЦОС'
                    ELSE 'Зателефонувати клієнту з результатом' END AS title
    FROM picked k
), timed AS (
    SELECT k.*, ((((k.at AT TIME ZONE herald_business_tz())::date
                  + (1 + floor(pg_temp.dh_r(k.key, 71) * 3))::int) + time '18:00')
                 AT TIME ZONE herald_business_tz()) AS due_at,
           CASE WHEN k.resolved_at IS NOT NULL
                THEN k.at + (k.resolved_at - k.at) * 0.7 END AS closed_at
    FROM titled k
), ins AS (
    INSERT INTO case_tasks (case_id, group_code, title, body, due_at, status, result, created_by,
                            created_by_login, created_at, closed_by, closed_by_login, closed_at)
    SELECT t.case_id, t.to_group, t.title, 'Клієнт очікує відповіді, деталі в зверненні.', t.due_at,
           CASE WHEN t.closed_at IS NULL THEN 'open' ELSE 'done' END,
           CASE WHEN t.closed_at IS NOT NULL THEN 'Виконано, результат передано в звернення.' END,
           t.agent_id, u.login, t.at,
           CASE WHEN t.closed_at IS NOT NULL THEN t.agent_id END,
           CASE WHEN t.closed_at IS NOT NULL THEN u.login END, t.closed_at
    FROM timed t JOIN users u ON u.id = t.agent_id
    ORDER BY t.at
    RETURNING id, case_id, group_code, title, due_at, created_by, created_by_login, created_at,
              status, closed_at, result
)
SELECT * FROM ins;
"""

# Messages an operator sent from the card (the demo templates), with their receipts: read,
# delivered, or a Viber failure followed by SMS (the fallback chain), or undeliverable.
_MESSAGES = """
CREATE TEMP TABLE dh_messages ON COMMIT DROP AS
SELECT c.client_id, c.account_id, g.i, c.client_id * 10 + g.i AS key, t.id AS template_id,
       t.current_version AS template_version,
       CASE WHEN pg_temp.dh_r(c.client_id * 10 + g.i, 41) < 0.5 THEN u.cc ELSE u.cos END AS sender,
       $1::timestamptz - interval '2 hours'
         - floor(pg_temp.dh_r(c.client_id * 10 + g.i, 42) * 88) * interval '1 day'
         - pg_temp.dh_r(c.client_id * 10 + g.i, 43) * interval '9 hours' AS at,
       pg_temp.dh_r(c.client_id * 10 + g.i, 44) AS outcome
FROM dh_clients c
CROSS JOIN dh_users u
CROSS JOIN LATERAL generate_series(0, (pg_temp.dh_r(c.client_id, 45) < 0.3)::int) AS g(i)
JOIN LATERAL (SELECT id, current_version FROM message_templates
              WHERE name = ANY($2::text[]) ORDER BY id
              OFFSET floor(pg_temp.dh_r(c.client_id * 10 + g.i, 46) * 3)::int LIMIT 1) t ON true
WHERE pg_temp.dh_r(c.client_id, 40) < 0.45;

ALTER TABLE dh_messages ADD COLUMN rm_id bigint;
WITH ins AS (
    INSERT INTO realtime_messages (kind, client_id, account_id, template_id, template_version,
                                   channel_chain, step, done, due_at, published_at, attempts,
                                   created_by, created_at, done_at)
    SELECT 'operator', m.client_id, m.account_id, m.template_id, m.template_version,
           ARRAY['viber', 'sms'], CASE WHEN m.outcome >= 0.85 AND m.outcome < 0.93 THEN 1 ELSE 0 END,
           true, m.at, m.at, 1, m.sender, m.at, m.at + interval '10 minutes'
    FROM dh_messages m ORDER BY m.at
    RETURNING id, client_id, created_at
)
UPDATE dh_messages m SET rm_id = ins.id FROM ins
WHERE ins.client_id = m.client_id AND ins.created_at = m.at;

INSERT INTO message_events (message_id, client_id, step, channel, status, reason, provider_id, at)
SELECT 'o' || m.rm_id || ':' || m.client_id || ':' || e.step, m.client_id, e.step, e.channel,
       e.status, e.reason, 'demo-' || m.rm_id || '-' || e.step, m.at + e.after
FROM dh_messages m
CROSS JOIN LATERAL (VALUES
    (0, 'viber', 'sent', NULL, interval '1 second', true),
    (0, 'viber', 'delivered', NULL, interval '4 seconds', m.outcome < 0.85),
    (0, 'viber', 'read', NULL, interval '7 minutes', m.outcome < 0.55),
    (0, 'viber', 'failed', 'not a Viber user', interval '6 seconds', m.outcome >= 0.85),
    (1, 'sms', 'sent', NULL, interval '8 seconds', m.outcome >= 0.85 AND m.outcome < 0.93),
    (1, 'sms', 'delivered', NULL, interval '15 seconds', m.outcome >= 0.85 AND m.outcome < 0.93),
    (1, 'sms', 'sent', NULL, interval '8 seconds', m.outcome >= 0.93),
    (1, 'sms', 'failed', 'undeliverable', interval '40 seconds', m.outcome >= 0.93)
) AS e(step, channel, status, reason, after, happened)
WHERE e.happened;
"""

# Monthly meter readings of the last three months (clients, the operator, the gas
# distribution operator), rising like a meter does; and the contact changes operators made.
_READINGS_AND_CONTACTS = """
INSERT INTO meter_readings (meter_id, read_on, value, source, at, entered_by, entered_by_login)
SELECT m.id, r.read_on, round((1000 + pg_temp.dh_r(m.id, 50) * 8000
                              + (3 - r.k) * (20 + pg_temp.dh_r(m.id, 51) * 120))::numeric, 3),
       r.source, (r.read_on + time '10:00' + pg_temp.dh_r(m.id * 10 + r.k, 53) * interval '8 hours')
                   AT TIME ZONE herald_business_tz(),
       CASE WHEN r.source = 'operator' THEN u.cos END,
       CASE WHEN r.source = 'operator' THEN 'operator.cos' END
FROM dh_clients c
JOIN accounts a ON a.client_id = c.client_id
JOIN meters m ON m.account_id = a.id AND m.status = 'active'
CROSS JOIN dh_users u
CROSS JOIN LATERAL (
    SELECT k, (date_trunc('month', ($1::timestamptz - interval '1 hour') AT TIME ZONE herald_business_tz())
               - (k - 1) * interval '1 month')::date
              + floor(pg_temp.dh_r(m.id * 10 + k, 52) * 5)::int AS read_on,
           (ARRAY['cabinet', 'app', 'chatbot', 'operator', 'ivr', 'gdo'])[
               1 + floor(pg_temp.dh_r(m.id * 10 + k, 54) * 6)::int] AS source
    FROM generate_series(1, 3) AS k
) r
WHERE (r.read_on + time '18:00') AT TIME ZONE herald_business_tz() <= $1::timestamptz - interval '1 hour'
ON CONFLICT DO NOTHING;

INSERT INTO audit_log (at, actor_id, actor_login, action, entity_type, entity_id, field,
                       old_value, new_value)
SELECT x.at, x.actor_id, x.actor_login, 'update', 'contact', c.contact_id::text, x.field,
       to_jsonb(x.old), to_jsonb(x.new)
FROM dh_clients c CROSS JOIN dh_users u
CROSS JOIN LATERAL (VALUES
    ('phone', '+38067' || lpad((1000000 + floor(pg_temp.dh_r(c.client_id, 60) * 8999999))::text, 7, '0'),
     c.phone),
    ('email', 'old.' || split_part(c.email, '@', 1) || '@ukr.net', c.email)
) AS x0(field, old, new)
CROSS JOIN LATERAL (SELECT x0.field, x0.old, x0.new,
        $1::timestamptz - interval '3 hours'
          - floor(pg_temp.dh_r(c.client_id, 61) * 80) * interval '1 day' AS at,
        CASE WHEN pg_temp.dh_r(c.client_id, 62) < 0.5 THEN u.cc ELSE u.cos END AS actor_id,
        CASE WHEN pg_temp.dh_r(c.client_id, 62) < 0.5 THEN 'operator.cc' ELSE 'operator.cos' END
            AS actor_login) x
WHERE pg_temp.dh_r(c.client_id, 63) < 0.25 AND x.new IS NOT NULL
  AND (x.field = 'phone' OR pg_temp.dh_r(c.client_id, 64) < 0.5);
"""


# Applications (заявки) on some clients' accounts, on the timeline as crm.activity puts them.
_APPLICATIONS = """
WITH picked AS (
    SELECT c.client_id, c.account_id, c.client_id AS key,
           (ARRAY['new_connection', 'data_update', 'owner_change', 'contract', 'other'])[
               1 + floor(pg_temp.dh_r(c.client_id, 80) * 5)::int] AS kind,
           (ARRAY['call', 'visit', 'chat', 'email', 'cabinet', 'app'])[
               1 + floor(pg_temp.dh_r(c.client_id, 81) * 6)::int] AS channel,
           $1::timestamptz - interval '2 hours'
             - floor(pg_temp.dh_r(c.client_id, 82) * 85) * interval '1 day' AS at
    FROM dh_clients c WHERE pg_temp.dh_r(c.client_id, 83) < 0.12
), ins AS (
    INSERT INTO applications (client_id, account_id, kind, channel, status, description,
                              created_at, updated_at)
    SELECT p.client_id, p.account_id, p.kind, p.channel,
           CASE WHEN p.at > $1::timestamptz - interval '10 days' THEN 'in_progress'
                WHEN pg_temp.dh_r(p.key, 84) < 0.85 THEN 'completed' ELSE 'rejected' END,
           CASE p.kind WHEN 'new_connection' THEN 'Приєднання нового газового котла'
                       WHEN 'data_update' THEN 'Оновлення паспортних даних власника'
                       WHEN 'owner_change' THEN 'Переоформлення після купівлі житла'
                       WHEN 'contract' THEN 'Укладення договору постачання'
                       ELSE 'Довідка про відсутність заборгованості' END,
           p.at, p.at + interval '2 days'
    FROM picked p ORDER BY p.at
    RETURNING id, client_id, account_id, kind, channel, status, description, created_at
), t AS (
    INSERT INTO timeline_events (client_id, kind, at, title, status, channel, direction, ref_type,
                                 ref_id, detail, created_at, updated_at)
    SELECT a.client_id, 'application', a.created_at,
           'Заявка №' || a.id || ': ' || CASE a.kind WHEN 'new_connection' THEN 'нове приєднання'
               WHEN 'data_update' THEN 'актуалізація даних' WHEN 'owner_change' THEN 'зміна власника'
               WHEN 'contract' THEN 'договір' ELSE 'інше' END,
           a.status, a.channel, 'in', 'application', a.id::text,
           jsonb_build_object('application_kind', a.kind, 'account_id', a.account_id,
                              'description', a.description), a.created_at, a.created_at
    FROM ins a
    RETURNING id, at, client_id, kind, ref_type, ref_id
)
INSERT INTO timeline_refs (client_id, kind, ref_type, ref_id, event_id, event_at)
SELECT client_id, kind, ref_type, ref_id, id, at FROM t;
"""

_CHANNEL_TYPES = {
    "cabinet": ("login", "reading_submitted", "payment_viewed", "payment"),
    "app": ("login", "reading_submitted", "payment"),
    "chatbot": ("chat",),
}
_SHOP_ITEMS = (
    ("Датчик загазованості «Сигнал»", "1450.00"),
    ("Газовий лічильник G4 Октава", "2890.00"),
    ("Сервісне обслуговування котла", "1200.00"),
    ("Гнучкий шланг для плити 1 м", "260.00"),
)
_TOPICS = (
    "Якість обслуговування в контакт-центрі",
    "Зручність мобільного застосунку",
    "Нагадування про повірку лічильника",
    "Інформування про заборгованість",
)


async def _digital_activity(conn: asyncpg.Connection, now: dt.datetime) -> int:
    """Digital-channel interactions, shop orders, surveys and outbound calls of the sampled
    clients, through crm.activity's own intake (deterministic per client)."""

    clients = [
        r["client_id"] for r in await conn.fetch("SELECT client_id FROM dh_clients ORDER BY n")
    ]
    channel_events: list[tuple[int, ChannelEvent]] = []
    cx: list[tuple[int, activity.CxEvent]] = []
    orders = 0
    for client_id in clients:
        rnd = random.Random(client_id)

        def at(days: float, rnd: random.Random = rnd) -> dt.datetime:
            return now - dt.timedelta(hours=2) - dt.timedelta(days=rnd.random() * days)

        for channel, share in (("cabinet", 0.6), ("app", 0.35), ("chatbot", 0.12)):
            if rnd.random() < share:
                for k in range(rnd.randint(1, 5)):
                    kind = rnd.choice(_CHANNEL_TYPES[channel])
                    channel_events.append(
                        (
                            len(channel_events),
                            ChannelEvent(
                                channel=channel,  # type: ignore[arg-type]  # a key of _CHANNEL_TYPES, the Literal's values
                                type=kind,
                                at=at(88),
                                external_id=f"demo-{channel}-{client_id}-{k}",
                                client_id=client_id,
                            ),
                        )
                    )
        if rnd.random() < 0.08:
            for k in range(rnd.randint(1, 2)):
                name, price = rnd.choice(_SHOP_ITEMS)
                quantity = rnd.randint(1, 2)
                ordered = at(80 if k else 12)
                status = (
                    rnd.choice(("confirmed", "paid", "in_delivery"))
                    if k == 0
                    else rnd.choice(("delivered", "delivered", "cancelled"))
                )
                await activity.upsert_shop_order(
                    conn,
                    f"DEMO-{client_id}-{k}",
                    ShopOrderSpec(
                        status=status,  # type: ignore[arg-type]  # one of ShopStatus's values
                        total=Decimal(price) * quantity,
                        items=[ShopItem(name=name, quantity=quantity, price=Decimal(price))],
                        ordered_at=ordered,
                        client_id=client_id,
                    ),
                    now=now,
                )
                channel_events.append(
                    (
                        len(channel_events),
                        ChannelEvent(
                            channel="shop",
                            type="order_placed",
                            at=ordered,
                            external_id=f"demo-shop-{client_id}-{k}",
                            client_id=client_id,
                        ),
                    )
                )
                orders += 1
        if rnd.random() < 0.15:
            score = rnd.choice((5, 5, 4, 4, 3, 2))
            cx.append(
                (
                    len(cx),
                    SurveyEvent(
                        external_id=f"demo-survey-{client_id}",
                        at=at(80),
                        score=score,
                        scale_max=5,
                        topic=rnd.choice(_TOPICS),
                        comment=None if score > 3 else "Довго чекав на лінії",
                        answers=[
                            Answer(
                                question="Чи вирішено ваше питання?",
                                answer="Так" if score > 2 else "Ні",
                            )
                        ],
                        client_id=client_id,
                    ),
                )
            )
        if rnd.random() < 0.1:
            result = rnd.choice(("answered", "answered", "no_answer", "busy", "callback_requested"))
            cx.append(
                (
                    len(cx),
                    OutboundCallEvent(
                        external_id=f"demo-outbound-{client_id}",
                        at=at(60),
                        result=result,  # type: ignore[arg-type]  # one of the Literal's values
                        topic="Нагадування про повірку лічильника",
                        comment="Клієнт запише дату повірки" if result == "answered" else None,
                        answers=[
                            Answer(
                                question="Чи зручно вам прийняти майстра цього місяця?",
                                answer="Так, після 15 числа",
                            )
                        ]
                        if result == "answered"
                        else [],
                        client_id=client_id,
                    ),
                )
            )
    await activity.ingest_channel_events(conn, channel_events, now=now)
    await activity.ingest_cx_events(conn, cx, now=now)
    return len(channel_events) + len(cx) + orders


# The demo operators' colleagues: the open work of a contact centre is more than two
# people's (their logins get a random password nobody knows; an admin may reset it).
COLLEAGUES = (
    ("kateryna.hnatiuk", "Катерина Гнатюк", "operator_cc", ("cc_l1", "cc_l2", "technical")),
    ("andrii.savchuk", "Андрій Савчук", "operator_cc", ("cc_l1", "cc_l2", "finance")),
    ("olha.moroz", "Ольга Мороз", "operator_cc", ("cc_l1", "technical")),
    ("serhii.lysenko", "Сергій Лисенко", "operator_cos", ("service_centre", "finance")),
)


async def _colleagues(conn: asyncpg.Connection) -> tuple[list[str], list[str]]:
    """Create the colleagues that are missing, in their groups; (cc logins, cos logins)."""
    actor = Actor(login=ACTOR)
    have = {r["login"] for r in await conn.fetch("SELECT login FROM users")}
    wanted: dict[str, list[int]] = {}
    for login, name, role, codes in COLLEAGUES:
        if login not in have:
            user = await users.create_user(
                conn,
                actor,
                PasswordPolicy(12),
                login=login,
                full_name=name,
                roles=[role],
                password=secrets.token_urlsafe(24) + "aA1!",
            )
            await agents.ensure_agent(conn, user.id)
            for code in codes:
                wanted.setdefault(code, []).append(user.id)
    for group in await groups.list_groups(conn):
        if group.code in wanted:
            await groups.set_members(
                conn, actor, group.code, sorted({*group.member_ids, *wanted[group.code]})
            )
    return (
        [c[0] for c in COLLEAGUES if c[2] == "operator_cc"],
        [c[0] for c in COLLEAGUES if c[2] == "operator_cos"],
    )


async def ensure_demo_history(
    conn: asyncpg.Connection, *, clients: int = 3000, now: dt.datetime | None = None
) -> DemoHistory:
    """Give up to ``clients`` demo clients their history, once; returns what was made."""
    now = now or clock.now()
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('herald demo history'))")
        if await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM audit_log WHERE entity_type = $1 AND entity_id = $2)",
            *MARK_ENTITY,
        ):
            return DemoHistory()
        if await conn.fetchval("SELECT to_regprocedure('pg_temp.dh_r(bigint, bigint)') IS NULL"):
            await conn.execute(_FUNCTIONS)
        cc_pool, cos_pool = await _colleagues(conn)
        await _run(conn, _SETUP, now)
        await _run(conn, _USERS, cc_pool, cos_pool)
        await _run(conn, _CLIENTS, clients)
        await _run(conn, _PLAN, now)
        await _run(conn, _CASES)
        await _run(conn, _CALLS)
        await _run(conn, _TASKS)
        await _run(conn, _EVENTS)
        await _run(conn, _MESSAGES, now, list(TEMPLATES))
        readings_before = await conn.fetchval("SELECT count(*) FROM meter_readings")
        contact_before = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE entity_type = 'contact' AND actor_login IN "
            "('operator.cc', 'operator.cos')"
        )
        await _run(conn, _READINGS_AND_CONTACTS, now)
        await _run(conn, _APPLICATIONS, now)
        activity_items = await _digital_activity(conn, now)
        made = DemoHistory(
            clients=await conn.fetchval("SELECT count(*) FROM dh_clients"),
            cases=await conn.fetchval("SELECT count(*) FROM dh_plan"),
            open_cases=await conn.fetchval("SELECT count(*) FROM dh_plan WHERE status <> 'closed'"),
            calls=await conn.fetchval("SELECT count(*) FROM dh_plan WHERE call_id IS NOT NULL"),
            messages=await conn.fetchval("SELECT count(*) FROM dh_messages"),
            readings=await conn.fetchval("SELECT count(*) FROM meter_readings") - readings_before,
            contact_changes=await conn.fetchval(
                "SELECT count(*) FROM audit_log WHERE entity_type = 'contact' AND actor_login IN "
                "('operator.cc', 'operator.cos')"
            )
            - contact_before,
            tasks=await conn.fetchval("SELECT count(*) FROM dh_tasks"),
            applications=await conn.fetchval(
                "SELECT count(*) FROM applications a JOIN dh_clients c ON c.client_id = a.client_id"
            ),
            digital_activity=activity_items,
        )
        await conn.execute(
            "INSERT INTO audit_log (actor_login, action, entity_type, entity_id, new_value) "
            "VALUES ($1, 'create', $2, $3, $4::jsonb)",
            ACTOR,
            *MARK_ENTITY,
            msgspec.json.encode(made).decode(),
        )
    return made


async def _run(conn: asyncpg.Connection, script: str, *args: object) -> None:
    """Run each statement of ``script`` (separated by blank-line-free ';' line ends)."""
    for statement in _statements(script):
        started = time.perf_counter()
        used = max((i + 1 for i in range(len(args)) if f"${i + 1}" in statement), default=0)
        await conn.execute(statement, *args[:used])
        log.debug("demo history: %.2f s for %s", time.perf_counter() - started, statement[:80])


def _statements(script: str) -> list[str]:
    out, current = [], []
    for line in script.splitlines():
        current.append(line)
        if line.rstrip().endswith(";") and not line.lstrip().startswith("--"):
            text = "\n".join(current).strip()
            if text and not all(part.lstrip().startswith("--") for part in text.splitlines()):
                out.append(text)
            current = []
    return out
