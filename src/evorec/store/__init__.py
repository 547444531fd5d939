"""The event store: users' events in SQLite or PostgreSQL, read by serving and training."""

from evorec.store.events import SCHEMA_VERSION, EventStore, IdempotencyConflict, default_url

__all__ = ["SCHEMA_VERSION", "EventStore", "IdempotencyConflict", "default_url"]
