"""Metadata database: models, engine, and migrations."""
