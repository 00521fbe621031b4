"""``herald up``: everything a developer needs, in one foreground command."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

_CHILDREN = ("serve", "worker", "simulators")


def supervise(commands: dict[str, list[str]], *, grace_seconds: float = 15.0) -> int:
    """Run the commands side by side until Ctrl-C/SIGTERM or until one exits; stop them all.

    Returns 0 after a requested stop, else the exit code of the child that ended first.
    """
    procs = {name: subprocess.Popen(cmd) for name, cmd in commands.items()}
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    exit_code = 0
    try:
        while not stopping:
            ended = {n: p.returncode for n, p in procs.items() if p.poll() is not None}
            if ended:
                name, code = next(iter(ended.items()))
                print(
                    f"herald up: {name} exited with code {code}; stopping the rest", file=sys.stderr
                )
                exit_code = code or 1
                break
            time.sleep(0.2)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        for name, proc in procs.items():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(
                    f"herald up: {name} did not stop in {grace_seconds} s; killing it",
                    file=sys.stderr,
                )
                proc.kill()
                proc.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return exit_code


def child_commands() -> dict[str, list[str]]:
    return {name: [sys.executable, "-m", "herald", name] for name in _CHILDREN}
