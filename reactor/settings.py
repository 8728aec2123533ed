"""Settings: one frozen value read from the environment, with errors that name the variable."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Mapping

from .errors import ConfigError

DEFAULT_SQLITE_PATH = "var/reactor.db"

_WHERE = {
    "ZOOM_WEBHOOK_SECRET_TOKEN": "the Secret Token on your Zoom app's Features page (Event Subscriptions)",
    "ZOOM_ACCOUNT_ID": "the Account ID on your Server-to-Server OAuth app's App Credentials page",
    "ZOOM_CLIENT_ID": "the Client ID on your Server-to-Server OAuth app's App Credentials page",
    "ZOOM_CLIENT_SECRET": "the Client Secret on your Server-to-Server OAuth app's App Credentials page",
}


@dataclass(frozen=True)
class Settings:
    webhook_secret: str
    account_id: str = ""
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    api_url: str = "https://api.zoom.us/v2"
    oauth_url: str = "https://zoom.us/oauth/token"
    rules_path: str = "rules"
    database_url: str = f"sqlite:///{DEFAULT_SQLITE_PATH}"
    signature_tolerance: int = 7200    # covers Zoom's retries (+5, +25, +85 min) if they keep the first timestamp
    dry_run: bool = False
    dispatch: str = "inline"          # inline: web processes dispatch; off: only `python -m reactor worker`
    dispatch_threads: int = 8
    zoom_rate: float = 30.0            # calls per second per Zoom account
    action_deadline: int = 1800        # seconds after the event; later, an action is dead
    history_days: int = 30
    secret_key: str = field(default="", repr=False)
    port: int = 8000                   # where gunicorn listens (PaaS set PORT); `send` posts there

    def __repr__(self) -> str:  # never print secrets
        return f"Settings(api_url={self.api_url!r}, rules_path={self.rules_path!r}, dry_run={self.dry_run})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, webhooks: bool = True, zoom: bool = True,
                 **overrides) -> "Settings":
        """Read every setting from `env` (default os.environ); raise one ConfigError naming every missing or
        invalid setting at once (its `problems` lists them). A command asks for the part it needs:
        `webhooks=False` (a dedicated worker, the tools) does not need the webhook secret, `zoom=False`
        (the tools) not the Zoom credentials."""
        env = os.environ if env is None else env
        problems: list[str] = []

        def read(parse, *args):
            try:
                return parse(*args)
            except ConfigError as exc:
                problems.append(str(exc))
                return None

        secret = env.get("ZOOM_WEBHOOK_SECRET_TOKEN", "")
        if not secret and webhooks:
            problems.append(_missing_text("ZOOM_WEBHOOK_SECRET_TOKEN"))
        dry_run = read(_flag, env, "REACTOR_DRY_RUN", False)
        creds = {k: env.get(k, "") for k in ("ZOOM_ACCOUNT_ID", "ZOOM_CLIENT_ID", "ZOOM_CLIENT_SECRET")}
        if dry_run is False and zoom:
            for name, value in creds.items():
                if not value:
                    problems.append(_missing_text(name, "or set REACTOR_DRY_RUN=1 to record actions without calling Zoom"))
        dispatch = env.get("REACTOR_DISPATCH", "inline")
        if dispatch not in ("inline", "off"):
            problems.append(f"REACTOR_DISPATCH is {dispatch!r}: use 'inline' (web processes dispatch) or 'off'")
        values = dict(
            database_url=read(normalise_database_url, env.get("DATABASE_URL", "")),
            signature_tolerance=read(_number, env, "REACTOR_SIGNATURE_TOLERANCE", 7200, int, 1),
            dispatch_threads=read(_number, env, "REACTOR_DISPATCH_THREADS", 8, int, 1),
            zoom_rate=read(_number, env, "REACTOR_ZOOM_RATE", 30.0, float, 0.01),
            action_deadline=read(_number, env, "REACTOR_ACTION_DEADLINE", 1800, int, 1),
            history_days=read(_number, env, "REACTOR_HISTORY_DAYS", 30, int, 1),
            port=read(_number, env, "PORT", 8000, int, 1),
        )
        tolerance, kept = values["signature_tolerance"], values["history_days"]
        if tolerance is not None and kept is not None and tolerance >= kept * 86400:
            problems.append(f"REACTOR_SIGNATURE_TOLERANCE ({tolerance} s) must be shorter than REACTOR_HISTORY_DAYS "
                            f"({kept} days): a replayed delivery is refused as a duplicate only while the first "
                            f"is remembered")
        if problems:
            raise config_error(problems)
        settings = cls(
            webhook_secret=secret,
            account_id=creds["ZOOM_ACCOUNT_ID"],
            client_id=creds["ZOOM_CLIENT_ID"],
            client_secret=creds["ZOOM_CLIENT_SECRET"],
            api_url=env.get("ZOOM_API_URL", cls.api_url).rstrip("/"),
            oauth_url=env.get("ZOOM_OAUTH_URL", cls.oauth_url),
            rules_path=env.get("REACTOR_RULES", cls.rules_path),
            dry_run=dry_run,
            dispatch=dispatch,
            secret_key=env.get("REACTOR_SECRET_KEY", ""),
            **values,
        )
        return replace(settings, **overrides) if overrides else settings


def config_error(problems: list[str]) -> ConfigError:
    """One ConfigError for every problem: the problem itself when there is one, else a numbered list."""
    if len(problems) == 1:
        error = ConfigError(problems[0])
    else:
        error = ConfigError(f"{len(problems)} settings need fixing:\n" + "\n".join(f"  - {p}" for p in problems))
    error.problems = list(problems)
    return error


def normalise_database_url(url: str) -> str:
    """Accept the forms PaaS give (postgres://, postgresql://, sqlite:///path); default to a local SQLite file."""
    if not url:
        return f"sqlite:///{DEFAULT_SQLITE_PATH}"
    if url.startswith("postgres://"):
        return "postgresql://" + url[len("postgres://"):]
    if url.startswith(("postgresql://", "sqlite:///")):
        return url
    raise ConfigError(
        f"DATABASE_URL must start with sqlite:///, postgresql:// or postgres:// (got {url.split(':', 1)[0]}:...)"
    )


def _missing_text(name: str, hint: str = "") -> str:
    message = f"{name} is not set: copy it from {_WHERE[name]}"
    return f"{message}; {hint}" if hint else message


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("0", "false", "no"):
        return False
    raise ConfigError(f"{name} is {raw!r}: use 1 or 0")


def _number(env: Mapping[str, str], name: str, default, kind, minimum):
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} is {raw!r}: it must be a number") from None
    if value < minimum:
        raise ConfigError(f"{name} is {raw!r}: it must be at least {minimum}")
    return value
