"""Switchyard gateway."""
