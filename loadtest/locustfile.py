"""Locust scenarios for the Herald admin API (see loadtest/README.md for how to run them).

Scenarios, one ``User`` class each (name them on the command line to run only some):

* ``StaffApiUser``: logs in as a staff user, then reads ``/api/v1/auth/me``,
  ``/readyz``, ``/api/v1/roles`` and ``/api/v1/users``; logs out when it stops.
* ``AnonymousUser``: probes ``/healthz`` without a session.

To add a scenario (campaigns, cards, ...): write a ``TaskSet`` of its requests, and a
``User`` class that subclasses :class:`HeraldUser` (it gets login, the bearer header and
re-login on 401) with ``tasks = [YourTaskSet]`` and a ``weight``. Keep the tasks of one
area in one TaskSet so they can be reused by users of different roles.

Settings come from ``LOADTEST_*`` environment variables, not ``HERALD_*``: ``herald``
rejects unknown ``HERALD_*`` variables, and the two often share a shell.

* ``LOADTEST_LOGIN`` / ``LOADTEST_PASSWORD``: the staff user (default: the demo admin of
  herald/cli/demo.py, created by ``herald seed --users-only``);
* ``LOADTEST_WAIT_MAX``: each user waits a random 0..N seconds between tasks
  (default 0: as fast as the server answers);
* ``LOADTEST_HOST``: the default target when ``--host`` is not given
  (default http://127.0.0.1:8080);
* ``LOADTEST_ALLOW_REMOTE=1``: allow a target that is not on this machine.

A headless run must be bounded: it is refused without ``--run-time``.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any
from urllib.parse import urlsplit

from locust import FastHttpUser, TaskSet, between, constant, events, task
from locust.env import Environment

from herald.cli.demo import DEMO_USERS

DEFAULT_HOST = os.environ.get("LOADTEST_HOST", "http://127.0.0.1:8080")


def _credentials() -> tuple[str, str]:
    admin = next(d for d in DEMO_USERS if d.role == "admin")
    return (
        os.environ.get("LOADTEST_LOGIN", admin.login),
        os.environ.get("LOADTEST_PASSWORD", admin.password),
    )


def _wait_time() -> Any:
    maximum = float(os.environ.get("LOADTEST_WAIT_MAX", "0"))
    return between(0, maximum) if maximum > 0 else constant(0)


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
    """A staff user of the admin API: logs in once, sends the bearer token with each call."""

    abstract = True
    host = DEFAULT_HOST
    wait_time = _wait_time()

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.auth_headers: dict[str, str] = {}

    def login(self) -> bool:
        """Log in with the configured credentials; False (and a failure recorded) if refused."""
        login, password = _credentials()
        with self.client.post(
            "/api/v1/auth/login",
            json={"login": login, "password": password},
            name="POST /api/v1/auth/login",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(
                    f"login as {login!r} refused: {response.status_code} "
                    f"{(response.text or '')[:200]}"
                )
                self.auth_headers = {}
                return False
            self.auth_headers = {"Authorization": f"Bearer {response.json()['token']}"}
            return True

    def logout(self) -> None:
        if self.auth_headers:
            self.client.post(
                "/api/v1/auth/logout", headers=self.auth_headers, name="POST /api/v1/auth/logout"
            )
            self.auth_headers = {}

    def api_get(self, path: str, *, name: str | None = None) -> None:
        """GET with the session; a 401 (expired session) logs in again and counts as a failure."""
        if not self.auth_headers and not self.login():
            return
        with self.client.get(
            path, headers=self.auth_headers, name=name or f"GET {path}", catch_response=True
        ) as response:
            if response.status_code == 401:
                response.failure("session no longer valid; logging in again")
                self.login()
            elif response.status_code != 200:
                response.failure(f"{response.status_code} {(response.text or '')[:200]}")

    def on_start(self) -> None:
        self.login()

    def on_stop(self) -> None:
        self.logout()


class FoundationReads(TaskSet):
    """What every staff screen asks for: who am I, are we up, roles and users."""

    user: HeraldUser

    @task(5)
    def me(self) -> None:
        self.user.api_get("/api/v1/auth/me")

    @task(1)
    def readyz(self) -> None:
        # Public, but it costs a round trip to PostgreSQL, RabbitMQ and Redis each.
        with self.client.get("/readyz", name="GET /readyz", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"not ready: {(response.text or '')[:200]}")

    @task(2)
    def roles(self) -> None:
        self.user.api_get("/api/v1/roles")

    @task(2)
    def users(self) -> None:
        self.user.api_get("/api/v1/users?limit=50", name="GET /api/v1/users")


class HealthProbes(TaskSet):
    """What a load balancer or orchestrator sends: liveness, no session."""

    @task
    def healthz(self) -> None:
        with self.client.get("/healthz", name="GET /healthz", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}")


class StaffApiUser(HeraldUser):
    """A logged-in staff user reading the foundation API."""

    weight = 4
    tasks = [FoundationReads]  # noqa: RUF012  # locust's own class attribute, read not changed


class AnonymousUser(FastHttpUser):
    """A health prober without a session."""

    weight = 1
    host = DEFAULT_HOST
    wait_time = _wait_time()
    tasks = [HealthProbes]  # noqa: RUF012  # locust's own class attribute, read not changed
