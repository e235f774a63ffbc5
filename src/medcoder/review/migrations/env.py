"""Alembic environment for the review store.

Why no ``alembic.ini``: the store runs the migrations itself (:func:`medcoder.review.db.migrate`)
on a connection it already opened, passed in ``config.attributes["connection"]``, so a user never
runs ``alembic`` by hand and the URL never sits in a file.
"""

from __future__ import annotations

from alembic import context

from medcoder.review.models import VERSION_TABLE, metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reachable by running the alembic CLI by hand
    raise RuntimeError("run the review migrations through medcoder.review.ReviewStore.open")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
