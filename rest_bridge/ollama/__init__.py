"""Ollama's REST API on the bridge: the same translation into gRPC as the OpenAI routes."""

from __future__ import annotations

from aiohttp import web

from rest_bridge.ollama import chat, embed, models


def setup(app: web.Application) -> None:
    for family in (models, chat, embed):
        family.setup(app)
