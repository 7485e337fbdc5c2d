"""The OpenAI-compatible server (`edge-namm serve`)."""
