"""Turnout scorer."""
