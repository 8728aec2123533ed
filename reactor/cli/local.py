"""The files a local reactor keeps in var/ (0600, in a 0700 folder): the webhook secret and console
password `make run` made, and the port `send` finds it on."""
from __future__ import annotations

import os
import secrets as pysecrets
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

LOCAL_SECRET_FILE = Path("var/local-webhook-secret")
DEV_PORT_FILE = Path("var/dev.port")  # written by `dev` (`make run`): where `send` finds the running reactor
DEFAULT_PORT = 8000


def without_password(url: str) -> str:
    """A DATABASE_URL fit to print: its password replaced."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


def private_file(path: Path, text: str) -> None:
    """Write `text` to `path` (creating var/ 0700), readable by this user only from its first byte."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)


def local_secret(create: bool) -> str:
    """The webhook secret `make run` uses when none is configured, kept in var/ for `send`."""
    if LOCAL_SECRET_FILE.exists():
        return LOCAL_SECRET_FILE.read_text().strip()
    if not create:
        return ""
    value = pysecrets.token_urlsafe(24)
    private_file(LOCAL_SECRET_FILE, value + "\n")
    return value


LOCAL_CONSOLE_FILE = Path("var/console-password")


def local_console_password() -> str:
    """The console password `make run` uses when none is configured: made once, kept in var/ (0600)."""
    if LOCAL_CONSOLE_FILE.exists():
        return LOCAL_CONSOLE_FILE.read_text().strip()
    value = pysecrets.token_urlsafe(18)
    private_file(LOCAL_CONSOLE_FILE, value + "\n")
    return value
