"""Switchyard gpu_agent."""
