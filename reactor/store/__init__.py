"""The store: where deliveries, the outbox of actions and their history live. Chosen by DATABASE_URL."""
from __future__ import annotations

from ..errors import SchemaError, StoreError
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


def check_schema_at_start(store: Store) -> str | None:
    """store.check_schema() before a process serves: None when it passed; the reason when a database that
    may be away for a moment (Store.starts_without_it) cannot be reached, and the process starts anyway.
    A wrong schema, or an embedded file that cannot be opened, raises."""
    try:
        store.check_schema()
    except StoreError as exc:
        if isinstance(exc, SchemaError) or not store.starts_without_it:
            raise
        return str(exc)
    return None


__all__ = ["STATUSES", "Accepted", "Attempt", "Job", "NewDelivery", "Store", "check_schema_at_start", "open_store"]
