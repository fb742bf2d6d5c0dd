"""``python -m turnout.scorer``: build settings once, log JSON lines, serve until SIGTERM/SIGINT.

``--help`` and ``--version`` are answered before the scorer's imports (numpy, the embedder, the
catalog: seconds), which load only once they have passed."""

from __future__ import annotations

import os

from turnout.common.cli import load_settings, parse_service_args, run_until_signalled

DESCRIPTION = "The Turnout scorer: answers the gateway's routing RPC over Redis."


def main(argv: list[str] | None = None) -> int:
    """Run the scorer until SIGTERM/SIGINT; exit 2 on invalid settings."""
    parse_service_args("turnout-scorer", DESCRIPTION, argv)  # --help / --version: answer, start nothing
    # The scorer's numpy work is small matrix-vector products on the event loop's thread; a
    # multi-threaded BLAS makes them 10-30x slower on a busy host (0.3 ms vs 8 ms for 5,000 x 128).
    # Must be set before numpy loads (the imports below).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import uvloop

    from turnout.scorer.app import serve
    from turnout.scorer.settings import ScorerSettings

    settings = load_settings(ScorerSettings, "scorer")
    run_until_signalled(lambda stop: serve(settings, stop=stop), runner=uvloop.run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
