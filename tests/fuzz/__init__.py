"""Property-based fuzz tests: header readers and the bridge's request parsing, on hostile input."""
