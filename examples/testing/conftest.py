"""Enables Voxtra's pytest plugin: the ``asterisk`` fixture (a real Asterisk)."""

pytest_plugins = ["voxtra.testing.pytest_plugin"]
