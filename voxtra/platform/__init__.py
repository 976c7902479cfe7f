"""The call platform: ``voxtra serve``, an HTTP API over a store of calls (issue 10).

Install the ``platform`` extra (``pip install 'voxtra[platform]'``). The layers inside,
lowest first:

* :mod:`voxtra.platform.store`: SQLAlchemy 2 (async) tables and the
  :class:`~voxtra.platform.store.db.Database` that migrates them with Alembic on start;
  SQLite by default, Postgres when the URL says so.
* :mod:`voxtra.platform.recorder`: fills the store from a running
  :class:`~voxtra.app.VoxtraApp` through its public hooks (no handler changes).
* :mod:`voxtra.platform.calls`: places API calls through the app.
* :mod:`voxtra.platform.api`: the FastAPI application (``/v1``), auth, errors, metrics.
* :mod:`voxtra.platform.serve`: the app and the API in one process and event loop.

Nothing here is imported by the rest of Voxtra except the ``voxtra serve`` command.
"""
