"""Settings from the environment: defaults, PaaS forms, and errors that say what to do (pure)."""
import pytest

from reactor.errors import ConfigError
from reactor.settings import Settings

BASE = {"ZOOM_WEBHOOK_SECRET_TOKEN": "s", "REACTOR_DRY_RUN": "1"}


def test_defaults():
    s = Settings.from_env(BASE)
    assert (s.api_url, s.oauth_url, s.rules_path, s.database_url, s.signature_tolerance, s.zoom_rate) == (
        "https://api.zoom.us/v2", "https://zoom.us/oauth/token", "rules", "sqlite:///var/reactor.db", 7200, 30.0)
    assert s.dry_run and s.dispatch == "inline" and s.action_deadline == 1800 and s.history_days == 30


@pytest.mark.parametrize("url,expected", [
    ("postgres://u:p@db.example.com:5432/d?sslmode=require", "postgresql://u:p@db.example.com:5432/d?sslmode=require"),
    ("postgresql://u@h/d", "postgresql://u@h/d"),
    ("sqlite:////data/reactor.db", "sqlite:////data/reactor.db"),
    ("", "sqlite:///var/reactor.db"),
], ids=["heroku-postgres", "postgresql", "sqlite-absolute", "default"])
def test_database_url_forms(url, expected):
    assert Settings.from_env({**BASE, "DATABASE_URL": url}).database_url == expected


@pytest.mark.parametrize("env,message", [
    ({}, "ZOOM_WEBHOOK_SECRET_TOKEN is not set: copy it from the Secret Token on your Zoom app's Features page"),
    ({"ZOOM_WEBHOOK_SECRET_TOKEN": "s"}, "ZOOM_ACCOUNT_ID is not set"),
    ({"ZOOM_WEBHOOK_SECRET_TOKEN": "s", "ZOOM_ACCOUNT_ID": "a", "ZOOM_CLIENT_ID": "c"}, "ZOOM_CLIENT_SECRET is not set"),
    ({**BASE, "DATABASE_URL": "mysql://x"}, "DATABASE_URL must start with sqlite:///, postgresql:// or postgres://"),
    ({**BASE, "REACTOR_SIGNATURE_TOLERANCE": "five"}, "REACTOR_SIGNATURE_TOLERANCE is 'five': it must be a number"),
    ({**BASE, "REACTOR_ZOOM_RATE": "0"}, "REACTOR_ZOOM_RATE is '0': it must be at least 0.01"),
    ({**BASE, "REACTOR_DRY_RUN": "maybe"}, "REACTOR_DRY_RUN is 'maybe': use 1 or 0"),
    ({**BASE, "REACTOR_DISPATCH": "sometimes"}, "REACTOR_DISPATCH is 'sometimes'"),
], ids=["no-secret", "no-account", "no-client-secret", "mysql", "tolerance-text", "rate-zero", "dry-run-text",
        "dispatch"])
def test_errors_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("'", "'")):
        Settings.from_env(env)


def test_worker_needs_no_webhook_secret_and_secrets_never_print():
    s = Settings.from_env({"ZOOM_ACCOUNT_ID": "a", "ZOOM_CLIENT_ID": "c", "ZOOM_CLIENT_SECRET": "very-secret"},
                          webhooks=False)
    assert "very-secret" not in repr(s) and "very-secret" not in str(s)


def test_every_missing_setting_is_named_at_once():
    """Trap 8: with nothing set, one start-up names all four, not one per restart."""
    with pytest.raises(ConfigError) as info:
        Settings.from_env({})
    assert [p.split(" is not set")[0] for p in info.value.problems] == [
        "ZOOM_WEBHOOK_SECRET_TOKEN", "ZOOM_ACCOUNT_ID", "ZOOM_CLIENT_ID", "ZOOM_CLIENT_SECRET"]
    message = str(info.value)
    assert message.startswith("4 settings need fixing:\n  - ZOOM_WEBHOOK_SECRET_TOKEN is not set: copy it from")
    assert "\n  - ZOOM_CLIENT_SECRET is not set: copy it from the Client Secret" in message


def test_every_malformed_setting_is_named_at_once():
    env = {"ZOOM_WEBHOOK_SECRET_TOKEN": "s", "REACTOR_DRY_RUN": "1", "DATABASE_URL": "mysql://x",
           "REACTOR_ZOOM_RATE": "0", "REACTOR_HISTORY_DAYS": "a month", "REACTOR_DISPATCH": "sometimes"}
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert [p.split(" ")[0] for p in info.value.problems] == [
        "REACTOR_DISPATCH", "DATABASE_URL", "REACTOR_ZOOM_RATE", "REACTOR_HISTORY_DAYS"]
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"REACTOR_DRY_RUN": "maybe"})
    assert [p.split(" ")[0] for p in info.value.problems] == ["ZOOM_WEBHOOK_SECRET_TOKEN", "REACTOR_DRY_RUN"]


def test_the_settings_table_and_the_settings_value_agree():
    """reactor.settings.SETTINGS is the one list: every field is read through it, with the same default."""
    import dataclasses

    from reactor.settings import SETTINGS

    fields = {f.name: f.default for f in dataclasses.fields(Settings)}
    assert sorted(s.field for s in SETTINGS if s.field) == sorted(fields)
    s = Settings.from_env({"ZOOM_WEBHOOK_SECRET_TOKEN": "s", "REACTOR_DRY_RUN": "1"})
    assert {name: getattr(s, name) for name in fields if name not in ("webhook_secrets", "dry_run")} == {
        name: default for name, default in fields.items() if name not in ("webhook_secrets", "dry_run")}
    assert all(s.description for s in SETTINGS)
    assert {s.name for s in SETTINGS if s.secret} >= {"ZOOM_WEBHOOK_SECRET_TOKEN", "ZOOM_CLIENT_SECRET",
                                                       "REACTOR_SECRET_KEY", "DATABASE_URL"}


def test_a_rotated_secret_token_gives_every_token_new_first():
    s = Settings.from_env({**BASE, "ZOOM_WEBHOOK_SECRET_TOKEN": " new-token , old-token "})
    assert (s.webhook_secret, s.webhook_secrets) == ("new-token", ("new-token", "old-token"))
    assert "new-token" not in repr(s) and "old-token" not in repr(s)
    assert Settings.from_env(BASE).webhook_secrets == ("s",)
    for raw, message in (("new,", "has an empty token between its commas"), ("a,b,a", "names the same token twice")):
        with pytest.raises(ConfigError, match=message):
            Settings.from_env({**BASE, "ZOOM_WEBHOOK_SECRET_TOKEN": raw})
