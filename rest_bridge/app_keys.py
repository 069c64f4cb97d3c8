"""Typed keys for the aiohttp application state shared by every handler."""

from __future__ import annotations

from aiohttp import web

from rest_bridge.core_client import CoreClient
from rest_bridge.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
CLIENT = web.AppKey("core_client", CoreClient)
