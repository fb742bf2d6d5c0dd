"""The scorer's settings: the scoring weights are ``scorer.routing.weights`` and reach the engine;
the old top-level ``scorer.weights`` (declared, never read) is refused with where to look."""

from __future__ import annotations

from pathlib import Path

import pytest

from turnout.common.errors import ConfigError
from turnout.scorer.engine import engine_config
from turnout.scorer.scoring_config import Weights
from turnout.scorer.settings import ScorerSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No TURNOUT_* from the outside, and no .env in the working directory."""
    import os

    for name in list(os.environ):
        if name.startswith("TURNOUT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_routing_weights_from_the_environment_reach_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNOUT_SCORER__ROUTING__WEIGHTS", '{"speed": 0.8, "resident": 0.3}')
    weights = engine_config(ScorerSettings.load().scorer).scoring.weights
    assert (weights.speed, weights.resident, weights.capability) == (0.8, 0.3, Weights().capability)


def test_an_unknown_or_negative_weight_is_refused_naming_the_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNOUT_SCORER__ROUTING__WEIGHTS", '{"fit": 1.0, "speed": -1}')
    with pytest.raises(ConfigError) as exc:
        ScorerSettings.load()
    assert str(exc.value) == (
        "invalid configuration:\n  TURNOUT_SCORER__ROUTING__WEIGHTS: Value error, unknown scoring weight(s) fit; "
        "the weights are capability, speed, cost, min_size, coder, feedback, diversity, tier, resident, unhealthy, "
        "no_room, free_vram, busy"
    )


def test_the_unused_top_level_weights_setting_says_where_the_weights_are(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNOUT_SCORER__WEIGHTS__SPEED", "0.8")
    with pytest.raises(ConfigError) as exc:
        ScorerSettings.load()
    assert (
        "scorer.weights (TURNOUT_SCORER__WEIGHTS__*) is not a setting: scoring weights are scorer.routing.weights"
        in (str(exc.value))
    )
