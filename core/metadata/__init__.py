"""Model metadata read from file headers only (GGUF KV section, SafeTensors JSON header)."""
