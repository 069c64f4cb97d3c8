"""Minerva's OpenAI-compatible REST/SSE bridge: an aiohttp app, only a gRPC client."""
