"""Turnout profiler."""
