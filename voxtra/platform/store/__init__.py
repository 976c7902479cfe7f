"""The platform's store: tables (one module per area) and the database that migrates them.

Every table module declares its models on :class:`voxtra.platform.store.base.Base`, and
every schema change ships as an Alembic revision in ``voxtra/platform/migrations``.
"""
