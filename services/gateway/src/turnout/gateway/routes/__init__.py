"""HTTP routes: the OpenAI API (``/v1``), the Ollama API (``/api``) and ops endpoints."""
