"""edge-namm: learned KV-cache memory (NAMM) for llama.cpp."""
