"""Schemathesis against a Herald served on 127.0.0.1: every operation of the OpenAPI
document, valid and invalid data, one session at a time; any 5xx is a failure, and so is
an error (4xx) of an API operation that is not an RFC 9457 problem (application/problem+json
with type, title and status). Pages (tag ``ui``) answer errors in HTML by design.

Runs in a thread with blocking ``requests`` while the test's event loop serves the app.
Generation is derandomized (the same cases every run), without shrinking, and every
failure is collected rather than raised, so one run reports them all.
"""

from __future__ import annotations

import collections
import json
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode

# Operations that would end or weaken the fuzzing session itself: run apart, each example
# with a fresh session and the users and roles restored after it.
APART = frozenset(
    {
        ("POST", "/api/v1/auth/logout"),
        ("POST", "/api/v1/auth/password"),
        ("PUT", "/api/v1/roles/{role}/permissions"),
        ("PATCH", "/api/v1/users/{user_id}"),
        ("POST", "/api/v1/users/{user_id}/password"),
    }
)


@dataclass
class FuzzReport:
    """What a run did: operations called per session, requests sent, statuses, 5xx found."""

    operations: dict[str, set[str]] = field(default_factory=dict)
    requests: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)
    not_generated: list[str] = field(default_factory=list)
    outages: int = 0

    def summary(self) -> str:
        every = set().union(*self.operations.values()) if self.operations else set()
        return (
            f"{len(every)} operations, {self.requests} requests, {len(self.failures)} failures "
            "(5xx, or an error that is not a problem); "
            f"statuses {dict(sorted(self.statuses.items()))}; sent again after a service "
            f"outage: {self.outages}"
        )


def load_schema(document: dict[str, Any]) -> Any:
    return schemathesis.openapi.from_dict(document)


def operations(schema: Any, *, apart: bool | None = None) -> list[Any]:
    """The document's operations: those kept apart, all the others, or (None) all."""
    found = []
    for result in schema.get_all_operations():
        op = result.ok()
        if apart is None or ((op.method.upper(), op.path) in APART) == apart:
            found.append(op)
    return sorted(found, key=lambda o: (o.path, o.method))


def name_of(op: Any) -> str:
    return f"{op.method.upper()} {op.path}"


def generate(
    ops: Iterable[Any], report: FuzzReport, *, valid: int, invalid: int
) -> list[tuple[Any, list[Any]]]:
    """Cases for each operation: ``valid`` that fit the schema and ``invalid`` that do not.

    Derandomized: the same cases every run. Generating costs more than sending, so the
    cases are made once and sent with every session.
    """
    made = []
    for op in ops:
        cases: list[Any] = []
        for mode, count in ((GenerationMode.POSITIVE, valid), (GenerationMode.NEGATIVE, invalid)):
            if count < 1:
                continue
            try:
                strategy = op.as_strategy(generation_mode=mode)
            except Exception as exc:  # a mode the operation's schema cannot give
                report.not_generated.append(f"{name_of(op)} {mode.value}: {exc}")
                continue

            @hypothesis.settings(
                max_examples=count,
                derandomize=True,
                database=None,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @hypothesis.given(case=strategy)
            def collect(case: Any) -> None:
                cases.append(case)  # noqa: B023 - collect() runs at once, in this iteration

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    collect()
                except hypothesis.errors.Unsatisfiable:
                    report.not_generated.append(f"{name_of(op)} {mode.value}: unsatisfiable")
        made.append((op, cases))
    return made


def _ready(session: requests.Session, base_url: str) -> bool:
    try:
        return session.get(f"{base_url}/readyz", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def _wait_until_ready(session: requests.Session, base_url: str, seconds: float = 90) -> None:
    """Wait for PostgreSQL, RabbitMQ and Redis to answer again (another test may restart the
    broker meanwhile: a 5xx then is the outage's, not the request's)."""
    deadline = time.monotonic() + seconds
    while not _ready(session, base_url) and time.monotonic() < deadline:
        time.sleep(0.5)


def page_operations(document: dict[str, Any]) -> frozenset[str]:
    """Operations ("METHOD /path") that answer a person's browser: the web UI (tag ``ui``)
    and the pages a message's recipient opens (HTML answers, such as /u/{token}). Their
    errors are HTML pages, not problems."""
    return frozenset(
        f"{method.upper()} {path}"
        for path, item in document.get("paths", {}).items()
        for method, op in item.items()
        if "ui" in (op.get("tags") or ())
        or any(
            "text/html" in (r.get("content") or {})
            for code, r in op.get("responses", {}).items()
            if code.startswith("2")
        )
    )


def stream_paths(document: dict[str, Any]) -> frozenset[str]:
    """Paths whose GET answers a live stream (SSE): judged by the status line alone."""
    return frozenset(
        path
        for path, item in document.get("paths", {}).items()
        if any(
            "text/event-stream" in (r.get("content") or {})
            for r in (item.get("get") or {}).get("responses", {}).values()
        )
    )


def send(
    made: Iterable[tuple[Any, list[Any]]],
    base_url: str,
    token: Callable[[], str],
    report: FuzzReport,
    *,
    label: str,
    streams: frozenset[str] = frozenset(),
    pages: frozenset[str] = frozenset(),
    after_each: Callable[[], None] | None = None,
    timeout: float = 30.0,
) -> None:
    """Send every case with the session ``token()`` gives; record statuses and any 5xx.

    A 5xx (or no answer) while a service is down is sent again once the services are back;
    only a 5xx with every service up counts.
    """
    seen = report.operations.setdefault(label, set())
    with requests.Session() as session:
        for op, cases in made:
            stream = op.path in streams
            for case in cases:
                for attempt in (1, 2):
                    status, error, problem = _send_one(
                        session, case, base_url, token, timeout, stream
                    )
                    if after_each is not None:
                        after_each()
                    if attempt == 1 and (error or status >= 500) and not _ready(session, base_url):
                        report.outages += 1
                        _wait_until_ready(session, base_url)
                        continue
                    break
                if error:
                    report.failures.append(f"[{label}] {name_of(op)}: {error}")
                    continue
                report.requests += 1
                report.statuses[status] += 1
                seen.add(name_of(op))
                if status >= 500:
                    report.failures.append(
                        f"[{label}] {name_of(op)} -> {status}: "
                        f"{case.as_curl_command(headers={'Authorization': '[session]'})}"
                    )
                elif status >= 400 and not problem and name_of(op) not in pages:
                    report.failures.append(
                        f"[{label}] {name_of(op)} -> {status} is not an RFC 9457 problem: "
                        f"{case.as_curl_command(headers={'Authorization': '[session]'})}"
                    )


def _send_one(
    session: requests.Session,
    case: Any,
    base_url: str,
    token: Callable[[], str],
    timeout: float,
    stream: bool,
) -> tuple[int, str, bool]:
    """(status, transport error, whether the answer is an RFC 9457 problem)."""
    request = case.as_transport_kwargs(
        base_url=base_url, headers={"Authorization": f"Bearer {token()}"}
    )
    try:
        # A live stream (SSE) is judged by its status line; its body never ends.
        with session.request(**request, timeout=timeout, stream=True) as response:
            if stream and response.status_code < 400:
                return response.status_code, "", False
            body = response.content  # read it all: a crash mid-body shows
            return response.status_code, "", _is_problem(response, body)
    except requests.RequestException as exc:
        return 0, f"{type(exc).__name__}: {exc}", False


def _is_problem(response: requests.Response, body: bytes) -> bool:
    if response.headers.get("Content-Type", "").split(";")[0] != "application/problem+json":
        return False
    try:
        problem = json.loads(body)
    except ValueError:
        return False
    return (
        isinstance(problem, dict)
        and isinstance(problem.get("type"), str)
        and isinstance(problem.get("title"), str)
        and problem.get("status") == response.status_code
    )
