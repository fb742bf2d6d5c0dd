"""Switchyard scorer."""
