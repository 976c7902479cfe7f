"""Alembic migrations of the platform's store, run by ``Database.migrate()`` on start.

One head at all times (a test checks it): a new revision's ``down_revision`` is the
newest one here. Each revision file's doc names its id.
"""
