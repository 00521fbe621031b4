"""Locust: a working day of Herald's staff and systems (see loadtest/README.md).

One ``User`` class per kind of user, each doing what that person does all day:

* ``CcOperator`` (contact centre): searches a client by phone, name or address, opens the
  card and the timeline, sends a templated SMS mid-call, takes the next case, replies,
  changes its status;
* ``VicidialStandIn``: the telephony, posting CTI events (ringing, answered, hung up) for
  the operators' calls;
* ``WalkInOperator`` (service centre): registers walk-in cases, enters meter readings;
* ``Supervisor``: keeps the live view's SSE stream open, lists the team queue, reassigns;
* ``Marketer``: previews segments, creates and launches a campaign, watches its stats;
* ``EventProducer``: a billing system posting trigger events in batches.

Each class has a tag of its own (``--tags cc``, ``cti``, ``walkin``, ``supervisor``,
``marketer``, ``events``) and can be named on the command line to run alone. Request names
are the route (``GET /api/v1/clients/{client_id}``), so the statistics group by route.

Pacing: ``wait_time`` models a shift (an operator's call takes minutes, a supervisor looks
at the queue every half minute); ``LOADTEST_PACE`` multiplies every wait (0.1: ten times
the pace, for a stress run). ``LOADTEST_EVENT_RATE`` is the producers' total events/s.

The data: ``LOADTEST_SAMPLE`` names a JSON file of real clients and ids of the target
database (``herald load --sample-only FILE`` writes it; ``herald load`` writes and uses it).
Settings come from ``LOADTEST_*`` variables, not ``HERALD_*`` (``herald`` rejects unknown
``HERALD_*`` variables, and the two often share a shell):

* ``LOADTEST_HOST``: the default target when ``--host`` is not given (http://127.0.0.1:8080);
* ``LOADTEST_ALLOW_REMOTE=1``: allow a target that is not on this machine (staging);
* ``LOADTEST_PASSWORDS``: a JSON object role -> [login, password] replacing the demo users.

A headless run must be bounded: it is refused without ``--run-time``.
"""

from __future__ import annotations

import collections
import datetime as dt
import ipaddress
import itertools
import json
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import gevent
from locust import FastHttpUser, between, constant_throughput, events, tag, task
from locust.env import Environment
from locust.exception import StopUser

from herald.cli.demo import DEMO_USERS

DEFAULT_HOST = os.environ.get("LOADTEST_HOST", "http://127.0.0.1:8080")
PACE = float(os.environ.get("LOADTEST_PACE", "1"))
EVENT_RATE = float(os.environ.get("LOADTEST_EVENT_RATE", "20"))
EVENT_BATCH = 50


def paced(low: float, high: float) -> Callable[[Any], float]:
    return between(low * PACE, high * PACE)


def _credentials(role: str, number: int = 0) -> tuple[str, str]:
    """The login of simulated person ``number`` of ``role``: a staff user of their own from
    the data file (``staff``), else ``LOADTEST_PASSWORDS``, else the role's demo user."""
    staff = Sample.get().get("staff", {}).get(role)
    if staff:
        return staff[number % len(staff)], Sample.get()["staff_password"]
    given = json.loads(os.environ.get("LOADTEST_PASSWORDS", "{}"))
    if role in given:
        login, password = given[role]
        return login, password
    demo = next(d for d in DEMO_USERS if d.role == role)
    return demo.login, demo.password


class Sample:
    """Real clients and ids of the target database, read once per process."""

    _lock = threading.Lock()
    _data: dict[str, Any] | None = None

    @classmethod
    def get(cls) -> dict[str, Any]:
        with cls._lock:
            if cls._data is None:
                path = os.environ.get("LOADTEST_SAMPLE")
                if not path:
                    raise StopUser("set LOADTEST_SAMPLE (herald load --sample-only FILE)")
                with open(path, encoding="utf-8") as f:
                    cls._data = json.load(f)
            return cls._data


_numbers: dict[str, itertools.count[int]] = collections.defaultdict(itertools.count)


def _is_local(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@events.init.add_listener
def _check_bounds(environment: Environment, **_: Any) -> None:
    """Refuse unbounded headless runs and, unless allowed, targets off this machine."""
    options = environment.parsed_options
    if options is None:  # run as a library, not from the locust command
        return
    host = options.host or DEFAULT_HOST
    if not _is_local(host) and os.environ.get("LOADTEST_ALLOW_REMOTE") != "1":
        raise SystemExit(
            f"locustfile: {host} is not on this machine; set "
            "LOADTEST_ALLOW_REMOTE=1 to load a remote installation on purpose"
        )
    if options.headless and not options.run_time:
        raise SystemExit("locustfile: a headless run needs --run-time (e.g. --run-time 20s)")


class HeraldUser(FastHttpUser):
    """A staff user: logs in as its role once, sends the bearer token, logs in again on 401."""

    abstract = True
    host = DEFAULT_HOST
    role = "admin"

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.auth: dict[str, str] = {}
        self.number = next(_numbers[self.role])  # this person's number among their role
        self.rnd = random.Random(self.number)

    @property
    def sample(self) -> dict[str, Any]:
        return Sample.get()

    def login(self) -> bool:
        login, password = _credentials(self.role, self.number)
        with self.client.post(
            "/api/v1/auth/login",
            json={"login": login, "password": password},
            name="POST /api/v1/auth/login",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(
                    f"login as {login!r}: {response.status_code} {response.error or ''}"
                )
                self.auth = {}
                return False
            self.auth = {"Authorization": f"Bearer {response.json()['token']}"}
            return True

    def call(
        self,
        method: str,
        path: str,
        name: str,
        *,
        ok: tuple[int, ...] = (200,),
        **kwargs: Any,
    ) -> Any:
        """One request as this user; a status outside ``ok`` is a failure. Returns the JSON
        body of a success (or None)."""
        if not self.auth and not self.login():
            return None
        with self.client.request(
            method, path, name=name, headers=self.auth, catch_response=True, **kwargs
        ) as response:
            if response.status_code == 401:
                response.failure("session no longer valid; logging in again")
                self.login()
                return None
            if response.status_code not in ok:
                response.failure(f"{response.status_code} {(response.text or '')[:200]}")
                return None
            if response.status_code == 204 or not response.content:
                return None
            return response.json()

    def client_row(self) -> dict[str, Any]:
        return self.rnd.choice(self.sample["clients"])

    def on_start(self) -> None:
        self.sample  # noqa: B018 - fail early without the data
        self.login()

    def on_stop(self) -> None:
        if self.auth:
            self.client.post(
                "/api/v1/auth/logout", headers=self.auth, name="POST /api/v1/auth/logout"
            )
            self.auth = {}


class CcOperator(HeraldUser):
    """A contact-centre operator: a call every couple of minutes, each with a search, the
    card and its timeline; some calls end in an SMS; between calls, cases from the queue."""

    role = "operator_cc"
    weight = 60
    wait_time = paced(20, 60)

    def on_start(self) -> None:
        super().on_start()
        # At the start of the shift: online, so the queue hands them cases.
        self.call(
            "PUT", "/api/v1/me/presence", "PUT /api/v1/me/presence", json={"presence": "online"}
        )

    def _open_card(self, client_id: int) -> None:
        self.call("GET", f"/api/v1/clients/{client_id}", "GET /api/v1/clients/{client_id}")
        self.call(
            "GET",
            f"/api/v1/clients/{client_id}/timeline?limit=20",
            "GET /api/v1/clients/{client_id}/timeline",
        )

    @tag("cc")
    @task(6)
    def call_by_phone(self) -> None:
        row = self.client_row()
        if not row.get("phone"):
            return
        self.call(
            "GET",
            "/api/v1/clients/search",
            "GET /api/v1/clients/search?phone",
            params={"phone": row["phone"]},
        )
        self._open_card(row["client_id"])

    @tag("cc")
    @task(2)
    def call_by_name(self) -> None:
        row = self.client_row()
        self.call(
            "GET",
            "/api/v1/clients/search",
            "GET /api/v1/clients/search?name",
            params={"name": row["name"]},
        )
        self._open_card(row["client_id"])

    @tag("cc")
    @task(2)
    def call_by_address(self) -> None:
        row = self.client_row()
        self.call(
            "GET",
            "/api/v1/clients/search",
            "GET /api/v1/clients/search?address",
            params={"address": row["address"]},
        )
        self._open_card(row["client_id"])

    @tag("cc")
    @task(1)
    def sms_mid_call(self) -> None:
        row = self.client_row()
        self._open_card(row["client_id"])
        self.call("GET", "/api/v1/operator-templates", "GET /api/v1/operator-templates")
        self.call(
            "POST",
            f"/api/v1/clients/{row['client_id']}/messages",
            "POST /api/v1/clients/{client_id}/messages",
            ok=(200, 201, 202),
            json={"template_id": self.sample["operator_template_id"], "channel": "sms"},
        )

    @tag("cc")
    @task(3)
    def next_case(self) -> None:
        case = self.call("POST", "/api/v1/cases/next", "POST /api/v1/cases/next", ok=(200, 204))
        if not case:
            self.call("GET", "/api/v1/cases?open=true&limit=20", "GET /api/v1/cases")
            return
        path = f"/api/v1/cases/{case['id']}"
        self.call("GET", path, "GET /api/v1/cases/{case_id}")
        self.call("GET", f"{path}/messages", "GET /api/v1/cases/{case_id}/messages")
        if case.get("client_id"):
            self._open_card(case["client_id"])
        self.call(
            "POST",
            f"{path}/status",
            "POST /api/v1/cases/{case_id}/status",
            json={"status": "in_progress"},
        )
        self.call(
            "POST",
            f"{path}/replies",
            "POST /api/v1/cases/{case_id}/replies",
            ok=(200, 201, 202),
            json={"text": "Доброго дня! Перевірили: нарахування правильне. Дякуємо за звернення."},
        )
        self.call(
            "POST",
            f"{path}/status",
            "POST /api/v1/cases/{case_id}/status",
            json={"status": "resolved", "comment": "Відповідь надіслано"},
        )


class VicidialStandIn(HeraldUser):
    """The telephony server: each call rings an operator's extension, is answered and hung
    up, as VICIdial posts it (the operators' card pops on ringing)."""

    role = "integration"
    weight = 6
    wait_time = paced(5, 15)

    @tag("cti")
    @task
    def incoming_call(self) -> None:
        row = self.client_row()
        if not row.get("phone"):
            return
        call_id = f"load{os.getpid()}x{self.number}x{time.monotonic_ns()}"
        operator, _ = _credentials("operator_cc", self.number)
        for event in ("ringing", "answered", "hung_up"):
            body: dict[str, Any] = {
                "event": event,
                "call_id": call_id,
                "phone_number": row["phone"],
                "user": operator,
            }
            if event == "hung_up":
                body.update(dispo="SALE", talk_time=self.rnd.randint(30, 400))
            self.call(
                "POST", "/api/v1/cti/calls", "POST /api/v1/cti/calls", ok=(200, 201, 202), json=body
            )
            gevent.sleep(self.rnd.uniform(0.5, 2.0) * PACE)


class WalkInOperator(HeraldUser):
    """A service-centre operator: a visitor every few minutes, with a question (a case) or a
    meter reading."""

    role = "operator_cos"
    weight = 15
    wait_time = paced(30, 90)

    @tag("walkin")
    @task(2)
    def walk_in_case(self) -> None:
        row = self.client_row()
        self.call(
            "GET",
            "/api/v1/clients/search",
            "GET /api/v1/clients/search?or",
            params={"or": row["or_number"]},
        )
        self.call("GET", f"/api/v1/clients/{row['client_id']}", "GET /api/v1/clients/{client_id}")
        self.call(
            "POST",
            "/api/v1/cases",
            "POST /api/v1/cases",
            ok=(201,),
            json={
                "text": "Клієнт у ЦОК: прошу перевірити нарахування за минулий місяць",
                "client_id": row["client_id"],
            },
        )

    @tag("walkin")
    @task(3)
    def meter_reading(self) -> None:
        # Each simulated operator has meters of their own: two never race for one meter.
        meters = self.sample["meters"]
        share = meters[self.number % len(meters) :: max(1, len(meters) // 50 or 1)] or meters
        meter_id = self.rnd.choice(share)
        page = self.call(
            "GET",
            f"/api/v1/meters/{meter_id}/readings?limit=1",
            "GET /api/v1/meters/{meter_id}/readings",
        )
        last = float(page["items"][0]["value"]) if page and page.get("items") else 0.0
        self.call(
            "POST",
            f"/api/v1/meters/{meter_id}/readings",
            "POST /api/v1/meters/{meter_id}/readings",
            ok=(200, 201),
            json={
                "value": f"{last + self.rnd.randint(1, 40)}",
                "read_on": dt.date.today().isoformat(),
                "source": "operator",
            },
        )


class Supervisor(HeraldUser):
    """A supervisor: the live view open all shift (one SSE stream), the team queue every
    half minute, a reassignment now and then."""

    role = "supervisor"
    weight = 3
    wait_time = paced(15, 45)

    def on_start(self) -> None:
        super().on_start()
        self._stream = gevent.spawn(self._watch)

    def on_stop(self) -> None:
        self._stream.kill(block=False)
        super().on_stop()

    def _watch(self) -> None:
        """Keep /api/v1/supervisor/stream open (its time: until the first byte of the
        answer); open it again when it ends."""
        while True:
            with self.client.get(
                "/api/v1/supervisor/stream",
                headers={**self.auth, "Accept": "text/event-stream"},
                name="GET /api/v1/supervisor/stream",
                stream=True,
                catch_response=True,
            ) as response:
                if response.status_code != 200:
                    response.failure(f"{response.status_code}")
                    if response.status_code == 401:
                        self.login()
                    gevent.sleep(5)
                    continue
                response.success()
            try:
                for _ in response.iter_content(4096):
                    pass
            except Exception:  # the stream ended or went quiet: open it again
                gevent.sleep(1)

    @tag("supervisor")
    @task(3)
    def team_queue(self) -> None:
        self.call("GET", "/api/v1/supervisor/view", "GET /api/v1/supervisor/view")
        self.call("GET", "/api/v1/supervisor/cases?limit=50", "GET /api/v1/supervisor/cases")

    @tag("supervisor")
    @task(1)
    def reassign(self) -> None:
        page = self.call("GET", "/api/v1/supervisor/cases?limit=50", "GET /api/v1/supervisor/cases")
        cases = [c for c in (page or {}).get("items", []) if c.get("group_code")]
        if not cases:
            return
        case = self.rnd.choice(cases)
        self.call(
            "POST",
            f"/api/v1/cases/{case['id']}/assignment",
            "POST /api/v1/cases/{case_id}/assignment",
            json={"group_code": case["group_code"], "comment": "Перерозподіл навантаження"},
        )


class Marketer(HeraldUser):
    """A marketer: edits a segment (previews), watches the running campaign's stats, and
    now and then creates and launches a small campaign."""

    role = "marketer"
    weight = 2
    wait_time = paced(20, 60)

    @tag("marketer")
    @task(4)
    def preview_segment(self) -> None:
        self.call(
            "POST",
            "/api/v1/segments/preview",
            "POST /api/v1/segments/preview",
            json={
                "condition": {
                    "all": [
                        {
                            "attribute": "billing.debt",
                            "op": "gt",
                            "value": self.rnd.choice([0, 500, 2000]),
                        },
                        {"attribute": "account.status", "op": "equals", "value": "active"},
                    ]
                }
            },
        )

    @tag("marketer")
    @task(4)
    def watch_stats(self) -> None:
        campaign_id = self.sample.get("campaign_id")
        self.call("GET", "/api/v1/campaigns?limit=20", "GET /api/v1/campaigns")
        if campaign_id:
            self.call(
                "GET",
                f"/api/v1/campaigns/{campaign_id}/stats",
                "GET /api/v1/campaigns/{campaign_id}/stats",
            )

    @tag("marketer")
    @task(1)
    def create_and_launch(self) -> None:
        clients = [r["client_id"] for r in self.rnd.sample(self.sample["clients"], k=10)]
        campaign = self.call(
            "POST",
            "/api/v1/campaigns",
            "POST /api/v1/campaigns",
            ok=(201,),
            json={
                "name": f"Нагадування {self.number}-{time.time_ns()}",
                "template_id": self.sample["campaign_template_id"],
                "audience": {"kind": "clients", "client_ids": clients},
                "channel_chain": ["viber", "sms"],
            },
        )
        if campaign:
            self.call(
                "POST",
                f"/api/v1/campaigns/{campaign['id']}/launch",
                "POST /api/v1/campaigns/{campaign_id}/launch",
                json={},
            )


class EventProducer(FastHttpUser):
    """The billing system: payments posted as trigger events, ``EVENT_BATCH`` per request,
    ``LOADTEST_EVENT_RATE`` events/s in total over the producers (two)."""

    host = DEFAULT_HOST
    fixed_count = 2
    wait_time = constant_throughput(EVENT_RATE / EVENT_BATCH / 2)

    def on_start(self) -> None:
        self.sample = Sample.get()
        self.n = 0

    @tag("events")
    @task
    def post_events(self) -> None:
        clients = self.sample["trigger_clients"]
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        batch = []
        for _ in range(EVENT_BATCH):
            self.n += 1
            batch.append(
                {
                    "event_id": f"load-{os.getpid()}-{id(self)}-{self.n}",
                    "type": self.sample["event_type"],
                    "client_id": clients[self.n % len(clients)],
                    "occurred_at": now,
                    "data": {"amount": 100 + self.n % 900},
                }
            )
        with self.client.post(
            "/api/v1/events",
            json={"events": batch},
            headers={"Authorization": f"Bearer {self.sample['producer_key']}"},
            name="POST /api/v1/events",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code} {(response.text or '')[:200]}")
