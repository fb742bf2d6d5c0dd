"""Turnout sync."""
