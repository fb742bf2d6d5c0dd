"""Backend configuration, model-name parsing and the clients for Ollama and OpenAI-compatible servers."""
