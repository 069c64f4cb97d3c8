"""SafeTensors (Hugging Face) checkpoints -> GGUF files llama.cpp serves, with numpy and gguf."""
