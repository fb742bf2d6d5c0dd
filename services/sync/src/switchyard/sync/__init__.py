"""Switchyard sync."""
