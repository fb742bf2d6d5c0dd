"""Switchyard profiler."""
