"""Turnout devstack."""
