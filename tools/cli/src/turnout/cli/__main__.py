"""``python -m turnout.cli`` / the ``turnout`` console script."""

from __future__ import annotations

from turnout.cli.app import build_app


def main() -> None:
    build_app()()


if __name__ == "__main__":
    main()
