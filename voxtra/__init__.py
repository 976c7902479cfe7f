"""Voxtra: voice applications and AI phone agents on Asterisk, through ARI."""

__version__ = "0.1.0.dev0"
