"""ari layer."""
