"""Model engines: llama.cpp generation, embeddings and tokenization off the event loop."""
