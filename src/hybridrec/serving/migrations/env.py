"""Alembic environment: migrations run on the connection `migrate` hands over.

There is no ``alembic.ini``: `hybridrec.serving.events.migrate` builds the Alembic config in
code and passes an open connection in ``config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context

from hybridrec.serving.events import VERSION_TABLE, metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only through `migrate`
    raise RuntimeError("run migrations through hybridrec.serving.events.migrate")
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
