"""The `minerva` command: a gRPC client of the core plus local model-file checks (no llama.cpp)."""
