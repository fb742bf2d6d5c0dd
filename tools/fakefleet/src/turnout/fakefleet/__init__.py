"""Turnout fakefleet: a simulated model fleet speaking the real Ollama and OpenAI wire protocols."""
