"""``python -m turnout.gpu_agent``: build settings once, log JSON lines, publish until SIGTERM/SIGINT.

``--help`` and ``--version`` are answered before the agent's own imports load."""

from __future__ import annotations

import sys

from turnout.common.cli import load_settings, parse_service_args, run_until_signalled

DESCRIPTION = "The Turnout GPU agent: publishes this host's GPU memory and loaded models, runs load/unload orders."


def main(argv: list[str] | None = None) -> int:
    """Run the agent until SIGTERM/SIGINT; exit 2 on invalid settings, 1 when its ops port is taken."""
    parse_service_args("turnout-gpu-agent", DESCRIPTION, argv)  # --help / --version: answer, start nothing
    from turnout.gpu_agent.app import serve
    from turnout.gpu_agent.settings import GpuAgentSettings

    settings = load_settings(GpuAgentSettings, "gpu-agent")
    try:
        run_until_signalled(lambda stop: serve(settings, stop=stop))
    except OSError as exc:  # the ops port is taken, typically
        print(f"gpu-agent: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
