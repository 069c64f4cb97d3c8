"""End-to-end tests: the real core and bridge processes driven by the openai SDK."""
