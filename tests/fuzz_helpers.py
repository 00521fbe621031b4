"""Schemathesis against a Herald served on 127.0.0.1: every operation of the OpenAPI
document, valid and invalid data, one session at a time; any 5xx is a failure.

Runs in a thread with blocking ``requests`` while the test's event loop serves the app.
Generation is derandomized (the same cases every run), without shrinking, and every
failure is collected rather than raised, so one run reports them all.
"""

from __future__ import annotations

import collections
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
APART = frozenset({
    ("POST", "/api/v1/auth/logout"),
    ("POST", "/api/v1/auth/password"),
    ("PUT", "/api/v1/roles/{role}/permissions"),
    ("PATCH", "/api/v1/users/{user_id}"),
    ("POST", "/api/v1/users/{user_id}/password"),
})


@dataclass
class FuzzReport:
    """What a run did: operations called per session, requests sent, statuses, 5xx found."""

    operations: dict[str, set[str]] = field(default_factory=dict)
    requests: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)
    not_generated: list[str] = field(default_factory=list)

    def summary(self) -> str:
        every = set().union(*self.operations.values()) if self.operations else set()
        return (f"{len(every)} operations, {self.requests} requests, {len(self.failures)} 5xx; "
                f"statuses {dict(sorted(self.statuses.items()))}")


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


def generate(ops: Iterable[Any], report: FuzzReport, *, valid: int,
             invalid: int) -> list[tuple[Any, list[Any]]]:
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

            @hypothesis.settings(max_examples=count, derandomize=True, database=None,
                                 deadline=None, phases=[Phase.explicit, Phase.generate],
                                 suppress_health_check=list(HealthCheck))
            @hypothesis.given(case=strategy)
            def collect(case: Any) -> None:  # noqa: B023 - run at once, in this iteration
                cases.append(case)

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    collect()
                except hypothesis.errors.Unsatisfiable:
                    report.not_generated.append(f"{name_of(op)} {mode.value}: unsatisfiable")
        made.append((op, cases))
    return made


def send(made: Iterable[tuple[Any, list[Any]]], base_url: str, token: Callable[[], str],
         report: FuzzReport, *, label: str, after_each: Callable[[], None] | None = None,
         timeout: float = 30.0) -> None:
    """Send every case with the session ``token()`` gives; record statuses and any 5xx."""
    seen = report.operations.setdefault(label, set())
    with requests.Session() as session:
        for op, cases in made:
            stream = op.path.endswith("/stream")
            for case in cases:
                request = case.as_transport_kwargs(
                    base_url=base_url, headers={"Authorization": f"Bearer {token()}"})
                try:
                    # A live stream (SSE) is judged by its status line; its body never ends.
                    with session.request(**request, timeout=timeout, stream=True) as response:
                        status = response.status_code
                        if not stream:
                            response.content  # noqa: B018 - read it all: a crash mid-body shows
                except requests.RequestException as exc:
                    report.failures.append(f"[{label}] {name_of(op)}: {type(exc).__name__}: {exc}")
                    continue
                finally:
                    if after_each is not None:
                        after_each()
                report.requests += 1
                report.statuses[status] += 1
                seen.add(name_of(op))
                if status >= 500:
                    report.failures.append(
                        f"[{label}] {name_of(op)} -> {status}: "
                        f"{case.as_curl_command(headers={'Authorization': '[session]'})}")
