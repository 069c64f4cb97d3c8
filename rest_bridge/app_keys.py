"""Typed keys for the aiohttp application state shared by every handler."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from rest_bridge.settings import Settings

if TYPE_CHECKING:
    from rest_bridge.admission import Admission
    from rest_bridge.drain import Drain
    from rest_bridge.metrics import BridgeMetrics
    from rest_bridge.routing import Router

SETTINGS = web.AppKey("settings", Settings)
METRICS: web.AppKey[BridgeMetrics] = web.AppKey("metrics")
DRAIN: web.AppKey[Drain] = web.AppKey("drain")
ADMISSION: web.AppKey[Admission] = web.AppKey("admission")
ROUTER: web.AppKey[Router] = web.AppKey("router")
