"""The store backends the contract tests run against, and the PostgreSQL the tests may use.

PostgreSQL tests run when REACTOR_TEST_DATABASE_URL is set or a server answers at 127.0.0.1:5432;
otherwise they are skipped, and said so. With REACTOR_REQUIRE_POSTGRES=1 (CI) a skip is a failure.
"""
from __future__ import annotations

import os
import re
import socket
import threading
import uuid
from urllib.parse import quote

import pytest

from reactor.store.sqlite import SQLiteStore
from tests.conftest import free_port

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_url() -> str | None:
    url = os.environ.get("REACTOR_TEST_DATABASE_URL")
    if url:
        return url
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return DEFAULT_PG
    except OSError:
        return None


def require_postgres() -> str:
    url = postgres_url()
    if url is None:
        if os.environ.get("REACTOR_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL is required (REACTOR_REQUIRE_POSTGRES=1) but none answers at 127.0.0.1:5432 "
                        "and REACTOR_TEST_DATABASE_URL is not set")
        pytest.skip("PostgreSQL tests skipped: no server at 127.0.0.1:5432 and REACTOR_TEST_DATABASE_URL not set")
    return url


def fresh_postgres_schema() -> str:
    """A DATABASE_URL whose tables live in a new, empty schema of the test database."""
    import psycopg

    base = require_postgres()
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={name}')}"


def migrate(url: str) -> None:
    """`python -m reactor migrate` against `url`, as the Procfile's release: step runs it."""
    from tests.conftest import run_cli

    result = run_cli("migrate", env={"DATABASE_URL": url})
    assert result.returncode == 0, result.stderr


def migrated_postgres_schema() -> str:
    """fresh_postgres_schema(), migrated."""
    url = fresh_postgres_schema()
    migrate(url)
    return url


def drop_schema(url: str) -> None:
    """Drop the schema a fresh_postgres_schema() URL points at, so that a run leaves nothing behind."""
    import psycopg

    name = re.search(r"search_path%3D(t_[0-9a-f]+)", url)
    if name:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name.group(1)} CASCADE")


def sqlite_store(tmp_path):
    return SQLiteStore(str(tmp_path / "contract.db"))


def postgres_store(tmp_path):
    from reactor.store.postgres import PostgresStore

    return PostgresStore(fresh_postgres_schema())


BACKENDS = [pytest.param(sqlite_store, id="sqlite"), pytest.param(postgres_store, id="postgres")]


class Proxy:
    """127.0.0.1:port -> PostgreSQL. `cut()` drops every connection and refuses new ones, as a database
    that went away; `restore()` lets connections through again. `freeze()` stops passing bytes either way
    on every connection, old and new, without closing any, as a stalled server or network; `thaw()`
    passes what was held and carries on."""

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5432)):
        self.target, self.port = target, free_port()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._flowing = threading.Event()
        self._flowing.set()
        self.restore()

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def url(self, url: str) -> str:
        return url.replace(f"{self.target[0]}:{self.target[1]}", f"127.0.0.1:{self.port}", 1)

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, []
        _close(listener)
        for sock in sockets:
            _close(sock)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=2)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                live = self._listener is listener
                if live:
                    self._sockets += [client, upstream]
            if not live:  # accepted just before a cut: a connection must not outlive the cut it raced
                _close(client)
                _close(upstream)
                return
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        _close(src)
        _close(dst)


def _close(sock: socket.socket | None) -> None:
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)  # also wakes a thread blocked in accept() or recv()
    except OSError:
        pass
    sock.close()
