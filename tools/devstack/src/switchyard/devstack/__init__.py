"""Switchyard devstack."""
