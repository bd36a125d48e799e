"""turboquant-harness: fetch a pinned llama.cpp, patch it, build it, check it, measure it."""
