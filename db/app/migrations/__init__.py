"""Alembic migrations of the DCS application database (run them with ``db.app.schema.upgrade``)."""
