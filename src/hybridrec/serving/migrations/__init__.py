"""Alembic migrations of the event store (run by `hybridrec.serving.events.migrate`)."""
