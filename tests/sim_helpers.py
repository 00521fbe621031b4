"""Shared by the provider and simulator tests: a receipt receiver, message builders, waiting."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from herald.settings import Settings
from providers.base import EmailContent, Outbound, Receipt, SmsContent, ViberContent
from providers.sim.gateway import SMS_SIM, VIBER_SIM
from providers.sim.ledger import Ledger
from providers.sim.server import init_simulators_app
from providers.sim.smtp_sink import EMAIL_SIM, start_smtp_sink

TOKEN = "test-provider-token"
FAST_RECEIPTS = {"delivered_after_ms": 0, "read_after_ms": 0, "receipt_window_ms": 10}


class ReceiptReceiver:
    """A stand-in for Herald's receipt endpoint: records what the simulators post."""

    def __init__(self) -> None:
        self.receipts: dict[str, list[Receipt]] = {"sms": [], "viber": [], "email": []}
        self.posts = 0
        self.fail_next = 0
        self.bad_auth = 0
        self._decoder = msgspec.json.Decoder(list[Receipt])

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/v1/providers/{channel}/receipts", self._post)
        return app

    async def _post(self, request: web.Request) -> web.Response:
        self.posts += 1
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.bad_auth += 1
            return web.Response(status=401)
        if self.fail_next:
            self.fail_next -= 1
            return web.Response(status=503)
        self.receipts[request.match_info["channel"]].extend(
            self._decoder.decode(await request.read())
        )
        return web.Response(status=204)


def sms(message_id: str, to: str = "+380501234567", text: str = "Борг 120 грн") -> Outbound:
    return Outbound(message_id, "sms", to, SmsContent(text))


def viber(message_id: str, to: str = "+380501234567") -> Outbound:
    return Outbound(
        message_id,
        "viber",
        to,
        ViberContent(
            "Нагадування про оплату",
            button_text="Сплатити",
            button_url="https://pay.example/1",
            image_url="https://img.example/1.png",
        ),
    )


def mail(message_id: str, to: str = "olena@example.com") -> Outbound:
    return Outbound(
        message_id,
        "email",
        to,
        EmailContent(
            subject="Рахунок за газ: 1 234,56 грн до 20.05",
            html="<p>Шановна Олено, <b>сплатіть</b></p>",
            text="Шановна Олено, сплатіть рахунок.",
        ),
    )


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` until true; fail the test after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def bound_socket() -> socket.socket:
    """A TCP socket bound to a free loopback port, held until a server takes it (no other
    process can take the port in between, as with ``free_port``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    """A TCP port nothing listens on (for connection-refused cases)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sim:
    """A running simulators app (HTTP) plus its SMTP sink, and the receiver of its receipts."""

    def __init__(
        self,
        settings: Settings,
        server: TestServer,
        app: web.Application,
        receiver: ReceiptReceiver,
        smtp: asyncio.Server,
    ) -> None:
        self.settings = settings
        self.server = server
        self.app = app
        self.receiver = receiver
        self.smtp_port = int(smtp.sockets[0].getsockname()[1])
        self.http = server.make_url("")

    def ledger(self, channel: str) -> Ledger:
        return self.app[{"sms": SMS_SIM, "viber": VIBER_SIM, "email": EMAIL_SIM}[channel]]

    async def configure(self, channel: str, **patch: object) -> dict[str, Any]:
        async with (
            ClientSession() as session,
            session.put(self.server.make_url(f"/{channel}/sim/config"), json=patch) as response,
        ):
            assert response.status == 200, await response.text()
            return await response.json()

    async def get(self, path: str, **params: str) -> dict[str, Any]:
        async with (
            ClientSession() as session,
            session.get(self.server.make_url(path), params=params) as response,
        ):
            assert response.status == 200, await response.text()
            return await response.json()

    async def stats(self, channel: str) -> dict[str, int]:
        return await self.get(f"/{channel}/sim/stats")


async def start_simulators(
    settings: Settings, aiohttp_server, smtp_sock: socket.socket | None = None
):
    """Simulators (HTTP) and an SMTP sink on free ports (or on the bound ``smtp_sock``);
    settings pointed at them."""
    app = init_simulators_app(settings)
    server = await aiohttp_server(app)
    smtp = await start_smtp_sink(app[EMAIL_SIM], "127.0.0.1", 0, sock=smtp_sock)
    settings = msgspec.structs.replace(
        settings,
        sms_gateway_url=str(server.make_url("/sms")),
        viber_api_url=str(server.make_url("/viber")),
        smtp_host="127.0.0.1",
        smtp_port=int(smtp.sockets[0].getsockname()[1]),
    )
    return settings, server, app, smtp


@pytest.fixture
async def sim(base_settings: Settings, aiohttp_server) -> AsyncIterator[Sim]:
    """The simulators on free ports, posting receipts to a ReceiptReceiver of the test."""
    receiver = ReceiptReceiver()
    receiver_server = await aiohttp_server(receiver.app())
    settings = msgspec.structs.replace(
        base_settings,
        provider_api_token=TOKEN,
        public_base_url=str(receiver_server.make_url("")).rstrip("/"),
    )
    settings, server, app, smtp = await start_simulators(settings, aiohttp_server)
    yield Sim(settings, server, app, receiver, smtp)
    smtp.close()
    await smtp.wait_closed()
