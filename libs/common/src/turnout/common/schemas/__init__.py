"""Typed messages that cross a process boundary (RPC bodies, events, fleet state, catalog)."""

from pydantic import BaseModel, ConfigDict


class WireModel(BaseModel):
    """Base of every message on the wire: unknown fields are ignored so that additive changes
    (a new optional field with a default) keep the version."""

    model_config = ConfigDict(extra="ignore")
