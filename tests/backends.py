"""The store backends the contract tests run against."""
from reactor.store.sqlite import SQLiteStore


def sqlite_store(tmp_path):
    return SQLiteStore(str(tmp_path / "contract.db"))


BACKENDS = [sqlite_store]
