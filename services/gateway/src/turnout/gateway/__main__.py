"""``python -m turnout.gateway``: answer ``--help``/``--version``, or load settings and serve
(:mod:`turnout.gateway.serving`: uvicorn + uvloop).

The app's imports (FastAPI, pydantic models, the routing tables: seconds) load only once the
arguments have passed, so ``--help`` answers at once."""

from __future__ import annotations

from turnout.common.cli import load_settings, parse_service_args

DESCRIPTION = (
    "The Turnout gateway: one OpenAI- and Ollama-compatible HTTP endpoint in front of a fleet of LLM backends."
)


def main(argv: list[str] | None = None) -> None:
    """Serve the gateway until SIGTERM/SIGINT; exit 2 on invalid settings."""
    parse_service_args("turnout-gateway", DESCRIPTION, argv)  # --help / --version: answer, start nothing
    from turnout.gateway.serving import serve
    from turnout.gateway.settings import GatewaySettings

    serve(load_settings(GatewaySettings, "gateway"))


if __name__ == "__main__":
    main()
