"""The store: where deliveries, the outbox of actions and their history live. Chosen by DATABASE_URL."""
from __future__ import annotations

from .contract import STATUSES, Accepted, Attempt, Job, NewDelivery, Store


def open_store(database_url: str) -> Store:
    """The Store for a DATABASE_URL (already normalised by Settings)."""
    if database_url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore

        return SQLiteStore(database_url[len("sqlite:///"):])
    if database_url.startswith("postgresql://"):
        from .postgres import PostgresStore

        return PostgresStore(database_url)
    raise ValueError(f"unsupported DATABASE_URL scheme: {database_url.split(':', 1)[0]}")


__all__ = ["STATUSES", "Accepted", "Attempt", "Job", "NewDelivery", "Store", "open_store"]
