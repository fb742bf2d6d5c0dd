"""Switchyard fakefleet."""
