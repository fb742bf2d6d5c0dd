"""Turnout gpu-agent: publishes each host's GPUs and the local backend's loaded models to Redis."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("turnout-gpu-agent")
except PackageNotFoundError:  # run from a source tree without installing (the GPU smoke bundle)
    __version__ = "0.0.0+src"
