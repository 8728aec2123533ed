"""The deploy files agree with the code: each parses, names only variables reactor reads (reactor.settings.SETTINGS
and the ${NAME}s of the shipped rules), sets every one a process needs, and runs only the Procfile's commands.

No container engine runs on this machine (`docker info` finds no daemon), so the Dockerfile is checked here,
not built: its base, its non-root USER, its CMD against the Procfile, and gunicorn honouring PORT.
The platforms' keys are checked against the lists in their published references (Heroku's app.json schema,
Render's render.yaml JSON schema, Fly's fly.toml reference), transcribed below.
compose.yaml's proxy is checked against the top-level Caddyfile here; tests/test_proxy.py runs that file.
"""
from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import sys
import tomllib

import pytest
import yaml

from reactor.rules.load import load_rules
from reactor.rules.model import Secret
from reactor.secrets import env_names
from reactor.settings import CALLS, SETTINGS, WEBHOOKS
from tests.conftest import ROOT

GRACEFUL_STOP = 20  # reactor/gunicorn_conf.py graceful_timeout, checked below
APP_JSON_KEYS = {"name", "description", "keywords", "website", "repository", "logo", "success_url", "scripts", "env",
                 "formation", "image", "addons", "buildpacks", "environments", "stack"}
APP_JSON_ENV_KEYS = {"description", "value", "required", "generator"}
RENDER_SERVICE_KEYS = {"type", "name", "region", "plan", "runtime", "repo", "branch", "image", "rootDir", "dockerCommand",
                       "dockerContext", "dockerfilePath", "numInstances", "healthCheckPath", "scaling", "buildCommand",
                       "startCommand", "preDeployCommand", "registryCredential", "domain", "domains", "envVars",
                       "autoDeploy", "autoDeployTrigger", "initialDeployHook", "disk", "buildFilter", "previews",
                       "maintenanceMode", "maxShutdownDelaySeconds", "ipAllowList", "renderSubdomainPolicy"}
RENDER_DATABASE_KEYS = {"name", "databaseName", "user", "region", "plan", "diskSizeGB", "storageAutoscalingEnabled",
                        "connectionPool", "previewPlan", "previewDiskSizeGB", "postgresMajorVersion", "highAvailability",
                        "ipAllowList", "readReplicas"}
RENDER_ENV_KEYS = {"key", "value", "generateValue", "sync", "previewValue", "fromDatabase", "fromService", "fromGroup"}
FLY_KEYS = {"app", "primary_region", "kill_signal", "kill_timeout", "swap_size_mb", "console_command", "build", "deploy",
            "env", "processes", "http_service", "services", "checks", "mounts", "vm", "statics", "metrics",
            "experimental"}


# -- what reactor reads and what each process needs ---------------------------------------------


def rule_variables() -> set[str]:
    """The ${NAME}s the shipped rules read (start-up requires each)."""
    rules = load_rules(ROOT / "rules", resolve_secrets=False)
    return {name for rule in rules.rules for action in rule.actions for _, value in action.args
            if isinstance(value, Secret) for name in env_names(value.ref)}


KNOWN = {s.name for s in SETTINGS} | rule_variables()
NEEDS = {  # what a PaaS process must be given (DATABASE_URL: the disk is ephemeral, SQLite would be lost)
    "web": {s.name for s in SETTINGS if s.required in (WEBHOOKS, CALLS)} | rule_variables() | {"DATABASE_URL"},
    "worker": {s.name for s in SETTINGS if s.required == CALLS} | rule_variables() | {"DATABASE_URL"},
    "release": {"DATABASE_URL"},
}
SECRETS = {s.name for s in SETTINGS if s.secret} | rule_variables()


def procfile() -> dict[str, list[str]]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {name.strip(): shlex.split(cmd) for name, _, cmd in (line.partition(":") for line in lines if line.strip())}


def command(cmd) -> list[str]:
    return list(cmd) if isinstance(cmd, list) else shlex.split(cmd)


def process_of(cmd) -> str | None:
    """The Procfile process this command is, or None."""
    tokens = command(cmd)
    return next((name for name, tokens_ in procfile().items() if tokens_ == tokens), None)


def check_env(where: str, names, needed: set[str]) -> list[str]:
    problems = [f"{where}: {name} is not a variable reactor reads" for name in sorted(set(names) - KNOWN)]
    problems += [f"{where}: {name} is needed and not set" for name in sorted(needed - set(names))]
    return problems


# -- one checker per file: each returns its problems ---------------------------------------------


def app_json_problems(doc: dict) -> list[str]:
    problems = [f"app.json: unknown key {k}" for k in set(doc) - APP_JSON_KEYS]
    env = doc.get("env", {})
    for name, spec in env.items():
        if not isinstance(spec, dict) or not spec.get("description"):
            problems.append(f"app.json: {name} has no description")
        elif set(spec) - APP_JSON_ENV_KEYS:
            problems.append(f"app.json: {name} has unknown keys {set(spec) - APP_JSON_ENV_KEYS}")
        elif name in SECRETS and "value" in spec:
            problems.append(f"app.json: {name} is a secret with a value in the repository")
        elif spec.get("generator") not in (None, "secret"):
            problems.append(f"app.json: {name} has an unknown generator")
    plans = [a if isinstance(a, str) else a.get("plan", "") for a in doc.get("addons", [])]
    if not any(p.split(":")[0] == "heroku-postgresql" for p in plans):
        problems.append("app.json: no heroku-postgresql add-on (it sets DATABASE_URL)")
    declared = set(env) | {"DATABASE_URL"}
    for process, spec in doc.get("formation", {}).items():
        if process not in procfile() or process == "release":
            problems.append(f"app.json: formation {process} is not a Procfile process")
        if spec.get("size", "").lower() == "eco":
            problems.append(f"app.json: {process} on eco dynos, which sleep")
        problems += check_env(f"app.json {process}", declared, NEEDS.get(process, set()))
    problems += check_env("app.json", env, set())
    missing = {"web", "worker"} - set(doc.get("formation", {}))
    problems += [f"app.json: no {p} in formation" for p in sorted(missing)]
    return problems


def render_problems(doc: dict) -> list[str]:
    problems = []
    databases = {d["name"] for d in doc.get("databases", [])}
    for db in doc.get("databases", []):
        problems += [f"render.yaml: database key {k} unknown" for k in set(db) - RENDER_DATABASE_KEYS]
    kinds = set()
    for service in doc.get("services", []):
        where = f"render.yaml {service.get('name')}"
        problems += [f"{where}: unknown key {k}" for k in set(service) - RENDER_SERVICE_KEYS]
        process = process_of(service.get("startCommand", ""))
        if process is None:
            problems.append(f"{where}: startCommand is not a Procfile command")
            continue
        kinds.add(process)
        if service.get("plan", "free") == "free":
            problems.append(f"{where}: the free plan sleeps (Zoom's 3 s deadline)")
        if process == "web":
            if service.get("healthCheckPath") != "/readyz":
                problems.append(f"{where}: healthCheckPath is not /readyz")
            if process_of(service.get("preDeployCommand", "")) != "release":
                problems.append(f"{where}: preDeployCommand is not the Procfile's release command")
        if service.get("maxShutdownDelaySeconds", 30) <= GRACEFUL_STOP:
            problems.append(f"{where}: maxShutdownDelaySeconds is not above gunicorn's graceful stop")
        names = []
        for var in service.get("envVars", []):
            problems += [f"{where}: envVar key {k} unknown" for k in set(var) - RENDER_ENV_KEYS]
            names.append(var["key"])
            if "fromDatabase" in var and var["fromDatabase"]["name"] not in databases:
                problems.append(f"{where}: {var['key']} names a database the Blueprint does not define")
            if var["key"] in SECRETS and "value" in var:
                problems.append(f"{where}: {var['key']} is a secret with a value in the repository")
        problems += check_env(where, names, NEEDS[process])
    problems += [f"render.yaml: no {p} service" for p in sorted({"web", "worker"} - kinds)]
    return problems


def fly_problems(doc: dict, readme: str) -> list[str]:
    problems = [f"fly.toml: unknown key {k}" for k in set(doc) - FLY_KEYS]
    if doc.get("kill_signal") != "SIGTERM":
        problems.append("fly.toml: kill_signal is not SIGTERM (gunicorn's graceful stop)")
    if not isinstance(doc.get("kill_timeout"), int) or doc["kill_timeout"] <= GRACEFUL_STOP:
        problems.append("fly.toml: kill_timeout is not above gunicorn's 20 s graceful stop")
    if process_of(doc.get("deploy", {}).get("release_command", "")) != "release":
        problems.append("fly.toml: release_command is not the Procfile's release command")
    processes = doc.get("processes", {})
    for name, cmd in processes.items():
        if process_of(cmd) != name:
            problems.append(f"fly.toml: process {name} does not run the Procfile's {name} command")
    problems += [f"fly.toml: no {p} process" for p in sorted({"web", "worker"} - set(processes))]
    http = doc.get("http_service", {})
    if http.get("processes") != ["web"]:
        problems.append("fly.toml: http_service does not serve the web process")
    if http.get("auto_stop_machines") not in ("off", False) or http.get("min_machines_running", 0) < 1:
        problems.append("fly.toml: web machines may stop (Zoom's 3 s deadline)")
    if not any(c.get("path") == "/readyz" for c in http.get("checks", [])):
        problems.append("fly.toml: no HTTP check on /readyz")
    if str(http.get("internal_port")) != str(doc.get("env", {}).get("PORT")):
        problems.append("fly.toml: internal_port is not the PORT gunicorn binds")
    problems += check_env("fly.toml [env]", doc.get("env", {}), set())
    problems += [f"fly.toml [env]: {name} is a secret: use fly secrets set" for name in doc.get("env", {})
                 if name in SECRETS]
    # secrets live in `fly secrets set`, which the README gives: it must name every one the processes need
    secrets_cmd = re.findall(r"fly secrets set ([^`\n]*(?:\\\n[^`\n]*)*)", readme)
    named = set(re.findall(r"\b([A-Z][A-Z0-9_]+)=", " ".join(secrets_cmd)))
    needed = (NEEDS["web"] | NEEDS["worker"]) - set(doc.get("env", {})) - {"DATABASE_URL"}  # attach sets it
    problems += check_env("README fly secrets set", named, needed)
    return problems


def dockerfile_problems(text: str) -> list[str]:
    lines = [line.strip() for line in text.replace("\\\n", " ").splitlines() if line.strip()
             and not line.strip().startswith("#")]
    instructions = [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]
    problems = []
    if ("FROM", "python:3.11-slim") not in instructions:
        problems.append("Dockerfile: not FROM python:3.11-slim")
    users = [arg for op, arg in instructions if op == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("Dockerfile: runs as root (no USER, or USER root)")
    cmds = [arg for op, arg in instructions if op == "CMD"]
    if any(op == "ENTRYPOINT" for op, _ in instructions):
        problems.append("Dockerfile: an ENTRYPOINT would wrap the platforms' process commands")
    if not cmds or not cmds[-1].startswith("["):
        problems.append("Dockerfile: CMD is not in exec form (SIGTERM must reach gunicorn)")
    elif process_of(json.loads(cmds[-1])) != "web":
        problems.append("Dockerfile: CMD is not the Procfile's web command")
    elif "--bind" in json.loads(cmds[-1]) or "-b" in json.loads(cmds[-1]):
        problems.append("Dockerfile: CMD binds a fixed address; PORT would be ignored")
    env_names_ = [m for op, arg in instructions if op == "ENV" for m in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", arg)]
    problems += check_env("Dockerfile ENV", [n for n in env_names_ if not n.startswith(("PYTHON", "PIP_"))], set())
    return problems


def compose_problems(doc: dict, dockerfile: str) -> list[str]:
    problems = []
    default_cmd = json.loads(re.findall(r"^CMD (.*)$", dockerfile, re.M)[-1])
    services = doc.get("services", {})
    ran = {}
    for name, service in services.items():
        if service.get("build") is None:
            continue  # not reactor (PostgreSQL): its environment is its image's
        process = process_of(service.get("command", default_cmd))
        if process is None:
            problems.append(f"compose.yaml {name}: runs a command the Procfile does not have")
            continue
        ran[process] = name
        problems += check_env(f"compose.yaml {name}", service.get("environment", {}), NEEDS[process])
        if process != "release":
            grace = str(service.get("stop_grace_period", "10s"))
            if not grace.endswith("s") or int(grace[:-1]) <= GRACEFUL_STOP:
                problems.append(f"compose.yaml {name}: stop_grace_period is not above gunicorn's graceful stop")
            depends = service.get("depends_on", {})
            if depends.get(ran.get("release", "migrate"), {}).get("condition") != "service_completed_successfully":
                problems.append(f"compose.yaml {name}: does not wait for the migrate step")
    problems += [f"compose.yaml: nothing runs the Procfile's {p}" for p in sorted(set(procfile()) - set(ran))]
    if not any(str(s.get("image", "")).startswith("postgres") for s in services.values()):
        problems.append("compose.yaml: no PostgreSQL service")
    return problems


CADDY_NEEDS = {  # the Caddyfile's directives that keep a slow client off gunicorn's threads (tests/test_proxy.py)
    "read_header": "a client may take forever to send its headers",
    "read_body": "a client may take forever to send its body",
    "buffer_requests": "gunicorn would read each body as slowly as the client sends it",
}


def proxy_problems(doc: dict, dockerfile: str, caddyfile: str) -> list[str]:
    """compose.yaml's proxy runs the repository's Caddyfile in front of the web process, which nothing else reaches;
    the Caddyfile reads what compose sets and keeps its timeouts and buffering."""
    problems = []
    default_cmd = json.loads(re.findall(r"^CMD (.*)$", dockerfile, re.M)[-1])
    services = doc.get("services", {})
    webs = {name: s for name, s in services.items()
            if s.get("build") is not None and process_of(s.get("command", default_cmd)) == "web"}
    for name, web in webs.items():
        if web.get("ports"):
            problems.append(f"compose.yaml {name}: publishes gunicorn's port: only the proxy may reach it")
        if not web.get("environment", {}).get("FORWARDED_ALLOW_IPS"):
            problems.append(f"compose.yaml {name}: FORWARDED_ALLOW_IPS unset: the proxy's X-Forwarded-Proto is ignored")
    proxies = {name: s for name, s in services.items() if str(s.get("image", "")).startswith("caddy:")}
    if not proxies:
        return problems + ["compose.yaml: no caddy service in front of web"]
    for name, proxy in proxies.items():
        where = f"compose.yaml {name}"
        volumes = proxy.get("volumes", [])
        if "./Caddyfile:/etc/caddy/Caddyfile:ro" not in volumes:
            problems.append(f"{where}: does not run the repository's Caddyfile")
        if not any(str(v).startswith("caddy_data:/data") for v in volumes):
            problems.append(f"{where}: certificates are not kept in a volume (each restart would ask for new ones)")
        published = {str(p).rsplit(":", 1)[-1] for p in proxy.get("ports", [])}
        if not {"80", "443"} <= published:
            problems.append(f"{where}: does not publish ports 80 and 443 (certificates, https)")
        env = proxy.get("environment", {})
        if not str(env.get("REACTOR_DOMAIN", "")).startswith("${REACTOR_DOMAIN:?"):
            problems.append(f"{where}: REACTOR_DOMAIN is not required from .env")
        read = dict(re.findall(r"\{\$([A-Z_][A-Z0-9_]*)(?::([^}]*))?\}", caddyfile))
        problems += [f"{where}: sets {n}, which the Caddyfile does not read" for n in sorted(set(env) - set(read))]
        problems += [f"{where}: the Caddyfile needs {n} and it is not set" for n, default in sorted(read.items())
                     if not default and n not in env]
        upstream = read.get("REACTOR_UPSTREAM", "")
        host, _, port = upstream.rpartition(":")
        if host not in webs or str(webs[host].get("environment", {}).get("PORT")) != port:
            problems.append(f"Caddyfile: its upstream {upstream or '(none)'} is not a web service's PORT")
    problems += [f"Caddyfile: no {d} ({why})" for d, why in CADDY_NEEDS.items()
                 if not re.search(rf"^\s*{d}\b", caddyfile, re.M)]
    return problems


# -- the files as shipped ------------------------------------------------------------------------


def load(name: str):
    path = ROOT / name
    if name.endswith(".json"):
        return json.loads(path.read_text())
    if name.endswith(".toml"):
        return tomllib.loads(path.read_text())
    return yaml.safe_load(path.read_text())


def test_the_procfile_is_what_the_files_are_checked_against():
    assert set(procfile()) == {"release", "web", "worker"}
    assert NEEDS["web"] >= {"ZOOM_WEBHOOK_SECRET_TOKEN", "ZOOM_CLIENT_SECRET", "YOUTUBE_STREAM_KEY", "DATABASE_URL"}


def test_app_json():
    assert app_json_problems(load("app.json")) == []


def test_render_yaml():
    assert render_problems(load("render.yaml")) == []


def test_fly_toml():
    assert fly_problems(load("fly.toml"), (ROOT / "README.md").read_text()) == []


def test_dockerfile():
    assert dockerfile_problems((ROOT / "Dockerfile").read_text()) == []


def test_compose_yaml():
    assert compose_problems(load("compose.yaml"), (ROOT / "Dockerfile").read_text()) == []


def test_compose_proxy():
    assert proxy_problems(load("compose.yaml"), (ROOT / "Dockerfile").read_text(), (ROOT / "Caddyfile").read_text()) == []


def test_gunicorn_binds_port_and_stops_within_the_grace_the_files_give():
    code = "import reactor.gunicorn_conf as c; print(c.bind, c.graceful_timeout)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=30,
                         env={"PORT": "5123", "PATH": ""}).stdout.split()
    assert out == ["0.0.0.0:5123", str(GRACEFUL_STOP)]


def test_every_variable_reactor_reads_is_in_the_settings_table():
    """A variable read outside the table would be invisible to this test and to doctor."""
    read = set()
    for path in (ROOT / "reactor").rglob("*.py"):
        read |= set(re.findall(r"environ(?:\.get)?\(\s*['\"]([A-Z][A-Z0-9_]+)['\"]", path.read_text()))
        read |= set(re.findall(r"\benv\.get\(\s*['\"]([A-Z][A-Z0-9_]+)['\"]", path.read_text()))
    assert read <= {s.name for s in SETTINGS}, read - {s.name for s in SETTINGS}
    assert {"PORT", "WEB_CONCURRENCY", "REACTOR_WEB_THREADS", "GUNICORN_LOGLEVEL"} <= read  # the scan finds them


# -- each checker fails on a broken file ---------------------------------------------------------


def broken(name: str, change):
    doc = copy.deepcopy(load(name))
    change(doc)
    return doc


@pytest.mark.parametrize("change,problem", [
    (lambda d: d["env"].update({"ZOOM_SECRET_TOKEN": {"description": "typo"}}),
     "app.json: ZOOM_SECRET_TOKEN is not a variable reactor reads"),
    (lambda d: d["env"].pop("ZOOM_CLIENT_SECRET"), "app.json web: ZOOM_CLIENT_SECRET is needed and not set"),
    (lambda d: d["formation"].update({"clock": {"quantity": 1}}), "app.json: formation clock is not a Procfile process"),
    (lambda d: d["env"]["ZOOM_CLIENT_SECRET"].pop("description"), "app.json: ZOOM_CLIENT_SECRET has no description"),
], ids=["unknown-variable", "missing-required", "unknown-process", "no-description"])
def test_app_json_checker_fails_on(change, problem):
    assert problem in app_json_problems(broken("app.json", change))


@pytest.mark.parametrize("change,problem", [
    (lambda d: d["services"][1]["envVars"].append({"key": "REACTOR_WORKERS", "value": "2"}),
     "render.yaml reactor-worker: REACTOR_WORKERS is not a variable reactor reads"),
    (lambda d: d["services"][0]["envVars"].pop(1),
     "render.yaml reactor-web: ZOOM_WEBHOOK_SECRET_TOKEN is needed and not set"),
    (lambda d: d["services"][1].update({"startCommand": "python -m reactor dispatch"}),
     "render.yaml reactor-worker: startCommand is not a Procfile command"),
    (lambda d: d["services"][0].update({"plan": "free"}), "render.yaml reactor-web: the free plan sleeps (Zoom's 3 s "
                                                          "deadline)"),
], ids=["unknown-variable", "missing-required", "unknown-command", "free-plan"])
def test_render_checker_fails_on(change, problem):
    assert problem in render_problems(broken("render.yaml", change))


@pytest.mark.parametrize("change,problem", [
    (lambda d: d["env"].update({"REACTOR_PORT": "8080"}), "fly.toml [env]: REACTOR_PORT is not a variable reactor reads"),
    (lambda d: d["processes"].update({"worker": "python -m reactor work"}),
     "fly.toml: process worker does not run the Procfile's worker command"),
    (lambda d: d.update({"kill_timeout": 5}), "fly.toml: kill_timeout is not above gunicorn's 20 s graceful stop"),
    (lambda d: d.update({"kill_signal": "SIGINT"}), "fly.toml: kill_signal is not SIGTERM (gunicorn's graceful stop)"),
], ids=["unknown-variable", "unknown-command", "kill-timeout", "kill-signal"])
def test_fly_checker_fails_on(change, problem):
    assert problem in fly_problems(broken("fly.toml", change), (ROOT / "README.md").read_text())


def test_fly_checker_fails_when_the_readme_misses_a_secret():
    readme = (ROOT / "README.md").read_text().replace("ZOOM_CLIENT_SECRET=", "ZOOM_SECRET=")
    assert "README fly secrets set: ZOOM_CLIENT_SECRET is needed and not set" in fly_problems(load("fly.toml"), readme)


@pytest.mark.parametrize("edit,problem", [
    (lambda t: t.replace("USER reactor\n", ""), "Dockerfile: runs as root (no USER, or USER root)"),
    (lambda t: t.replace('"reactor:create_app()"]', '"reactor:app"]'), "Dockerfile: CMD is not the Procfile's web command"),
    (lambda t: t.replace('"gunicorn", "-c"', '"gunicorn", "--bind", "0.0.0.0:8000", "-c"'),
     "Dockerfile: CMD is not the Procfile's web command"),
    (lambda t: t.replace("PORT=8000", "PORT=8000 \\\n    REACTOR_PORT=8000"),
     "Dockerfile ENV: REACTOR_PORT is not a variable reactor reads"),
], ids=["root", "other-command", "fixed-bind", "unknown-variable"])
def test_dockerfile_checker_fails_on(edit, problem):
    assert problem in dockerfile_problems(edit((ROOT / "Dockerfile").read_text()))


@pytest.mark.parametrize("change,problem", [
    (lambda d: d["services"]["worker"]["environment"].update({"ZOOM_SECRET": "x"}),
     "compose.yaml worker: ZOOM_SECRET is not a variable reactor reads"),
    (lambda d: d["services"]["web"]["environment"].pop("ZOOM_WEBHOOK_SECRET_TOKEN"),
     "compose.yaml web: ZOOM_WEBHOOK_SECRET_TOKEN is needed and not set"),
    (lambda d: d["services"]["worker"].update({"command": "python -m reactor run-worker"}),
     "compose.yaml worker: runs a command the Procfile does not have"),
    (lambda d: d["services"]["web"].pop("stop_grace_period"),
     "compose.yaml web: stop_grace_period is not above gunicorn's graceful stop"),
], ids=["unknown-variable", "missing-required", "unknown-command", "grace-period"])
def test_compose_checker_fails_on(change, problem):
    assert problem in compose_problems(broken("compose.yaml", change), (ROOT / "Dockerfile").read_text())


@pytest.mark.parametrize("change,edit,problem", [
    (lambda d: d["services"]["web"].update({"ports": ["8000:8000"]}), None,
     "compose.yaml web: publishes gunicorn's port: only the proxy may reach it"),
    (lambda d: d["services"]["web"]["environment"].pop("FORWARDED_ALLOW_IPS"), None,
     "compose.yaml web: FORWARDED_ALLOW_IPS unset: the proxy's X-Forwarded-Proto is ignored"),
    (lambda d: d["services"]["caddy"]["volumes"].pop(0), None, "compose.yaml caddy: does not run the repository's Caddyfile"),
    (lambda d: d["services"]["caddy"]["environment"].update({"REACTOR_DOMAIN": "${REACTOR_DOMAIN:-localhost}"}), None,
     "compose.yaml caddy: REACTOR_DOMAIN is not required from .env"),
    (lambda d: d["services"]["caddy"]["environment"].update({"REACTOR_HOST": "x"}), None,
     "compose.yaml caddy: sets REACTOR_HOST, which the Caddyfile does not read"),
    (None, lambda t: t.replace("web:8000", "web:8080"), "Caddyfile: its upstream web:8080 is not a web service's PORT"),
    (None, lambda t: t.replace("buffer_requests", "# buffer_requests"),
     "Caddyfile: no buffer_requests (gunicorn would read each body as slowly as the client sends it)"),
    (None, lambda t: t.replace("read_header 5s", ""),
     "Caddyfile: no read_header (a client may take forever to send its headers)"),
], ids=["web-published", "no-forwarded-allow-ips", "no-caddyfile", "domain-optional", "unknown-variable",
        "wrong-upstream", "no-buffering", "no-header-timeout"])
def test_proxy_checker_fails_on(change, edit, problem):
    doc = broken("compose.yaml", change) if change else load("compose.yaml")
    caddyfile = (ROOT / "Caddyfile").read_text()
    assert problem in proxy_problems(doc, (ROOT / "Dockerfile").read_text(), edit(caddyfile) if edit else caddyfile)
