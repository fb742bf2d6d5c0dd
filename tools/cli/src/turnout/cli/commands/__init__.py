"""One module per command group; each has ``register(app: typer.Typer) -> None``."""

COMMAND_MODULES: tuple[str, ...] = (
    "check",
    "models",
    "explain",
    "profile",
    "requests",
    "router",
)
"""The command modules, in help order. A new group is its module plus one line here."""
