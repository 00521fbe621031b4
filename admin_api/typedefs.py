"""Typed keys of everything the admin API keeps on its aiohttp Application."""

from __future__ import annotations

import asyncpg
import prometheus_client
import redis.asyncio as aioredis
from aiohttp import web

from crm.users import Principal
from herald.amqp import AmqpLink
from herald.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", asyncpg.Pool)
REDIS = web.AppKey("redis", aioredis.Redis)
AMQP = web.AppKey("amqp", AmqpLink)
METRICS = web.AppKey("metrics", prometheus_client.CollectorRegistry)

# Per-request values set by the middlewares.
REQUEST_ID = web.RequestKey("request_id", str)
PRINCIPAL = web.RequestKey("principal", Principal)
TOKEN = web.RequestKey("token", str)
