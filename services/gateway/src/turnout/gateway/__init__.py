"""Turnout gateway."""
