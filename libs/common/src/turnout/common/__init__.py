"""Code shared by every Turnout service: settings, RPC, schemas, DB, backend clients."""

__version__ = "0.1.0"
