"""The dashboard's performance scatter: one circle per point at its place, one colour per model."""

from __future__ import annotations

import re

from turnout.gateway.ui import PALETTE, scatter_svg


def test_points_are_placed_on_a_log_time_axis_and_coloured_per_model() -> None:
    svg = scatter_svg(
        [
            {"model": "b", "ttft_ms": 100.0, "tokens_per_s": 50.0},
            {"model": "a", "ttft_ms": 10.0, "tokens_per_s": 100.0},
            {"model": "a", "ttft_ms": 1000.0, "tokens_per_s": 25.0},
        ]
    )
    circles = re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)" r="4" fill="(#\w+)"[^>]*data-model="(\w)"', svg)
    # x: 56 + (log10(t) - 1) / 2 * 414 ; y: 12 + 248 - v / 110 * 248
    assert circles == [
        ("263.0", "147.3", PALETTE[1], "b"),
        ("56.0", "34.5", PALETTE[0], "a"),
        ("470.0", "203.6", PALETTE[0], "a"),
    ]
    assert re.findall(r">([^<>]+ m?s)</text>", svg) == [
        "10 ms",
        "20 ms",
        "50 ms",
        "100 ms",
        "200 ms",
        "500 ms",
        "1 s",
    ]
    assert "a (2)</text>" in svg and "b (1)</text>" in svg


def test_no_points_is_said_in_words() -> None:
    assert "No finished streamed requests yet." in scatter_svg([])


def test_model_names_are_escaped() -> None:
    svg = scatter_svg([{"model": "<script>", "ttft_ms": 5.0, "tokens_per_s": 1.0}])
    assert "<script>" not in svg and "&lt;script&gt;" in svg
