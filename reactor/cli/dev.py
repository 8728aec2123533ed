"""`dev`: what `make run` runs, a local reactor with local defaults for what is not configured."""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from ..settings import Settings
from .local import (DEV_PORT_FILE, LOCAL_CONSOLE_FILE, LOCAL_SECRET_FILE, local_console_password, local_secret,
                    private_file, without_password)
from .registry import command


@command("dev", "what `make run` runs: a local reactor on 127.0.0.1:$PORT")
def cmd_dev(args, settings: Settings) -> int:
    """Start gunicorn as the Procfile does, with local defaults for what is not configured."""
    env = dict(os.environ)
    notes = []
    if not settings.webhook_secret:
        env["ZOOM_WEBHOOK_SECRET_TOKEN"] = local_secret(create=True)
        notes.append(f"webhook secret: a local one in {LOCAL_SECRET_FILE} (set ZOOM_WEBHOOK_SECRET_TOKEN for Zoom)")
    if not all((settings.account_id, settings.client_id, settings.client_secret)):
        env.setdefault("REACTOR_DRY_RUN", "1")
        notes.append("no Zoom credentials: DRY RUN, actions are recorded, not sent (an unset ${NAME} in the "
                     "rules is shown as unset)")
    if not settings.console_password:
        env["REACTOR_CONSOLE_PASSWORD"] = local_console_password()
    notes.append(f"console: http://127.0.0.1:{settings.port}/console (password: "
                 f"{'REACTOR_CONSOLE_PASSWORD' if settings.console_password else LOCAL_CONSOLE_FILE})")
    env.setdefault("WEB_CONCURRENCY", "2")
    env["PORT"] = str(settings.port)
    private_file(DEV_PORT_FILE, f"{settings.port}\n")
    print(f"reactor on http://127.0.0.1:{settings.port}  (rules: {settings.rules_path}, "
          f"database: {without_password(settings.database_url)})")
    for note in notes:
        print(f"  - {note}")
    tool = _this_tool()
    print(f"try, in another terminal in this folder (`send` finds port {settings.port} in {DEV_PORT_FILE}):")
    print(f'  {tool} send meeting.started --topic "Town Hall"')
    print(f"  {tool} history")
    sys.stdout.flush()
    cmd = [sys.executable, "-m", "gunicorn", "-c", "python:reactor.gunicorn_conf", "--bind",
           f"127.0.0.1:{settings.port}", "reactor:create_app()"]
    os.execve(cmd[0], cmd, env)


def _this_tool() -> str:
    """How to call this reactor from another terminal: its `reactor` script if installed, else this
    Python with -m (relative to the current folder when inside it, e.g. .venv/bin/python)."""
    bin_dir = Path(sys.executable).parent
    script = bin_dir / "reactor"
    target, suffix = (script, "") if script.is_file() else (Path(sys.executable), " -m reactor")
    try:
        shown = str(target.absolute().relative_to(Path.cwd()))
        shown = shown if "/" in shown else "./" + shown
    except ValueError:
        shown = str(target)
    return shlex.quote(shown) + suffix
