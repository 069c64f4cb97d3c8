"""Bridge tests: the aiohttp app on fake core stubs, and its own channel on fake servers."""
