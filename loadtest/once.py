"""Every user class of the locustfile, once: each class's ``on_start``, each of its tasks
once, ``on_stop``, against ``--host`` (the data file in ``LOADTEST_SAMPLE``). Prints one
JSON line: per class the tasks run, the requests by name, and every failure. Exit code 1
when a request failed. The smoke test of the scenarios (tests/test_loadtest.py).

    python -m loadtest.once --host http://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import gevent
from locust import events
from locust.env import Environment

from loadtest.locustfile import (
    CcOperator,
    EventProducer,
    Marketer,
    Supervisor,
    VicidialStandIn,
    WalkInOperator,
)

CLASSES = (CcOperator, VicidialStandIn, WalkInOperator, Supervisor, Marketer, EventProducer)


def run(host: str) -> dict[str, Any]:
    env = Environment(user_classes=list(CLASSES), host=host, events=events)
    report: dict[str, Any] = {"classes": {}, "failures": []}
    current: dict[str, Any] = {}

    def on_request(name: str, exception: Any = None, **_: Any) -> None:
        current["requests"][name] = current["requests"].get(name, 0) + 1
        if exception is not None:
            report["failures"].append(f"{current['class']}: {name}: {exception}")

    env.events.request.add_listener(on_request)
    for cls in CLASSES:
        current.update({"class": cls.__name__, "requests": {}})
        cls.host = host  # as locust's --host does
        user = cls(env)
        user.on_start()
        tasks = list(dict.fromkeys(cls.tasks))  # weights repeat a task in the list
        for work in tasks:
            work(user)  # type: ignore[operator]  # a task is a function of the user
        gevent.sleep(0.5)  # a stream opened at the start gets its answer
        user.on_stop()
        report["classes"][cls.__name__] = {
            "tasks": [t.__name__ for t in tasks],  # type: ignore[union-attr]  # tasks are functions here
            "requests": current["requests"],
        }
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", required=True)
    report = run(parser.parse_args().host)
    print(json.dumps(report, ensure_ascii=False))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
