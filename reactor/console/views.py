"""The console's pages. Every state-changing request is a POST carrying the session's CSRF token;
read-only mode refuses them all except logging in and out and trying an event (which stores nothing)."""
from __future__ import annotations

import json
import time

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from ..errors import PayloadError, StoreError
from ..events import event_from_body, parse_body
from ..logs import log
from ..plan import plan
from ..redact import masked
from ..retry_policy import operator_retry_refusal
from ..samples import sample, sample_names
from . import auth
from .reading import (PAGE, BadInput, check_id, check_meeting, counted, pending, read_filter, read_id,
                      stream_state, age, when)

bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates", static_folder="static",
               static_url_path="/static")
throttle = auth.Throttle()
OPEN = {"console.login", "console.static"}           # reachable without logging in
CHANGES = {"console.retry_job", "console.retry_dead"}  # refused in read-only mode
PASTE_LIMIT = 256 * 1024
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store"}


def reactor():
    return current_app.extensions["reactor"]


def page(template: str, status: int = 200, **context):
    settings = reactor().settings
    return render_template(template, csrf=auth.csrf_token(), readonly=settings.console_readonly,
                           logged_in=auth.logged_in(time.time()), when=when, age=age, **context), status


def problem(status: int, message: str):
    return page("message.html", status, title="Cannot do that" if status < 500 else "Something failed",
                message=message)


@bp.after_request
def security_headers(response):
    response.headers.update(HEADERS)
    return response


@bp.before_request
def guard():
    now = time.time()
    if request.endpoint in OPEN:
        if request.method == "POST" and not auth.csrf_ok():
            return problem(403, "the form's security token is missing or stale: reload the page and try again")
        return None
    if not auth.logged_in(now):
        if request.method == "POST":
            return problem(403, "you are logged out (or your session expired after 12 hours): nothing was changed; "
                                "log in and try again")
        return redirect(url_for("console.login", next=request.full_path if request.args else request.path))
    if request.method == "POST":
        if not auth.csrf_ok():
            return problem(403, "the form's security token is missing or stale: nothing was changed; reload the "
                                "page and try again")
        if request.endpoint in CHANGES and reactor().settings.console_readonly:
            return problem(403, "the console is read-only (REACTOR_CONSOLE_READONLY=1): nothing was changed")
    return None


@bp.errorhandler(BadInput)
def bad_input(exc):
    return problem(400, str(exc))


@bp.errorhandler(StoreError)
def store_down(exc):
    log("console: the store failed", 40, error=str(exc))
    return problem(503, "the database is unavailable right now; try again in a moment")


@bp.errorhandler(HTTPException)
@bp.errorhandler(400)  # by code too: the app's own 404/405/413 handlers (JSON, for Zoom) come first otherwise
@bp.errorhandler(404)
@bp.errorhandler(405)
@bp.errorhandler(413)
def http_error(exc):
    messages = {413: "that was larger than 1 MiB: paste one event, not a file of them",
                404: "there is no such console page", 405: "use the page's buttons for that"}
    return problem(exc.code or 400, messages.get(exc.code, exc.description or "the request was not understood"))


@bp.errorhandler(Exception)
def unexpected(exc):
    log("console: unexpected error", 40, error=type(exc).__name__)
    return problem(500, "an internal error; nothing was changed")


# -- logging in and out ---------------------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login():
    target = _local(request.values.get("next", ""))
    if request.method == "GET":
        return page("login.html", next=target, error="")
    address, now = auth.client_address(), time.time()
    wait = throttle.refused_for(address, now)
    if wait > 0:
        return page("login.html", 429, next=target, error=f"too many wrong passwords from {address}: try again in "
                                                          f"{int(wait // 60) + 1} minute(s)")
    if not auth.password_ok(request.form.get("password", ""), reactor().settings.console_password):
        throttle.wrong(address, now)
        log("console: wrong password", 30, address=address)
        return page("login.html", 401, next=target, error="wrong password")
    throttle.right(address)
    auth.log_in(now)
    log("console: logged in", address=address)
    return redirect(target or url_for("console.overview"), 303)


def _local(target: str) -> str:
    """Only a console path may be a login's next page (never another site)."""
    return target if target.startswith("/console") and "//" not in target and "\\" not in target else ""


@bp.route("/logout", methods=["GET", "POST"])
def logout():
    if request.method == "GET":
        return problem(405, "log out with the Log out button")
    auth.log_out()
    return redirect(url_for("console.login"), 303)


# -- reading ------------------------------------------------------------------------------------------


@bp.get("")
def overview():
    r, figures = reactor(), current_app.extensions["console_figures"]
    over, now = figures.get(time.time(), r.store.console_overview)
    rules = r.rules
    oldest = over["oldest_pending_due"]
    return page("overview.html", over=over, rules=rules.current, loaded_at=rules.loaded_at,
                rejected=[p for p in rules.last_error.split("; ") if p], now=now, counted=counted, every=figures.seconds,
                oldest_age=(now - oldest) if oldest is not None else None,
                store=r.settings.database_url.split(":", 1)[0], dry_run=r.settings.dry_run,
                refresh=over["open"]["pending"] + over["open"]["running"] > 0)


@bp.get("/deliveries")
def deliveries():
    wanted = read_filter(request.args)
    before = read_id(request.args.get("before"))
    result = reactor().store.deliveries_page(before_id=before, limit=PAGE, **wanted.store_args())
    return page("deliveries.html", result=result, filter=wanted, before=before,
                refresh=any(r["jobs"].get("pending") or r["jobs"].get("running") for r in result["rows"]))


@bp.get("/deliveries/<int:delivery_id>")
def delivery(delivery_id: int):
    found = reactor().store.delivery(check_id(delivery_id, "delivery"))
    if found is None:
        return problem(404, f"no delivery {delivery_id}: it may have been pruned after REACTOR_HISTORY_DAYS")
    if found.get("inbox"):  # acknowledged, not yet matched and planned
        return page("message.html", title=f"Delivery {delivery_id} is being processed", refresh=True,
                    message=f"received {when(found['received_at'])}; its rules are matched and its actions planned "
                            f"a moment after the 200 (this page refreshes)")
    if "duplicate" in found:
        return redirect(url_for("console.delivery", delivery_id=found["id"], repeat=delivery_id))
    return page("delivery.html", d=found, repeat=read_id(request.args.get("repeat"), "repeat"), sources=_sources(),
                body=_pretty(found["body"]), explained=_explain_stored(found["body"], found["account"] or None),
                refresh=pending([found]), masked=masked, pretty=_pretty)


def _explain_stored(body, account: str | None = None) -> list:
    """Every rule in force now, judged against the stored (redacted) body, as `explain` would: the answer to
    "why did my rule not fire" when the rule was not even a candidate at the time."""
    raw = json.dumps(body).encode()
    try:
        return reactor().rules.current.explain(event_from_body(parse_body(raw), raw), account)
    except PayloadError:
        return []


@bp.get("/meetings/<meeting>")
def meeting(meeting: str):
    timeline = reactor().store.meeting_timeline(check_meeting(meeting))
    state, since = stream_state(timeline)
    return page("meeting.html", meeting=meeting, timeline=timeline, state=state, since=since,
                refresh=pending(timeline), masked=masked, pretty=_pretty)


@bp.route("/rules", methods=["GET", "POST"])
def rules():
    current = reactor().rules.current
    matches = reactor().store.rule_matches(time.time() - 86400)
    tried, error, pasted, chosen = None, "", "", ""
    if request.method == "POST":
        chosen = request.form.get("sample", "")
        pasted = request.form.get("event", "")
        try:
            tried = _try(current, chosen, pasted)
        except BadInput as exc:
            error = str(exc)
    return page("rules.html", 400 if error else 200, rules=current.rules, matches=matches, samples=sample_names(),
                tried=tried, error=error, pasted=pasted[:PASTE_LIMIT], chosen=chosen, masked=masked)


def _try(current, chosen: str, pasted: str) -> dict:
    """explain's verdicts and planned calls for a sample or pasted event: nothing stored, nothing called."""
    if pasted.strip():
        if len(pasted) > PASTE_LIMIT:
            raise BadInput(f"the pasted event is {len(pasted)} characters: paste one event (at most {PASTE_LIMIT})")
        raw = pasted.encode("utf-8", "replace")
    elif chosen:
        try:
            raw = json.dumps(sample(chosen)).encode()
        except KeyError:
            raise BadInput("choose one of the listed samples") from None
    else:
        raise BadInput("choose a sample or paste an event's JSON")
    try:
        body = parse_body(raw)
        event = event_from_body(body, raw)
    except PayloadError as exc:
        raise BadInput(f"that is not an event reactor can read: {exc}") from None
    verdicts = current.explain(event)
    actions, skipped = plan(event, [v.rule for v in verdicts if v.matched])
    return {"event": event.name, "target": event.order_key, "verdicts": verdicts,
            "actions": actions, "skipped": skipped}


def _sources() -> dict:
    return {rule.name: rule.source for rule in reactor().rules.current.rules}


def _pretty(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


# -- changing: retries ----------------------------------------------------------------------------------


def _refusal(r, job_id: int, now: float) -> str | None:
    """The CLI's safety rule: why retrying this action could act on the wrong meeting instance, or None."""
    jobs = r.store.dead_jobs(job_id)
    return operator_retry_refusal(jobs[0]["instance_ended"], jobs[0]["deadline"], now) if jobs else None


def _note() -> str:
    return f"retried from the console at {when(time.time())} from {auth.client_address()}"


@bp.route("/jobs/<int:job_id>/retry", methods=["GET", "POST"])
def retry_job(job_id: int):
    if request.method == "GET":
        return problem(405, "retry with the Retry button on the delivery's page")
    r, now = reactor(), time.time()
    back = read_id(request.form.get("delivery"), "delivery")
    refusal = _refusal(r, check_id(job_id, "action"), now)
    if refusal:
        flash(f"action {job_id} was not re-queued: {refusal} (the CLI's `reactor retry {job_id} --force` sends it "
              f"anyway)")
        return redirect(url_for("console.delivery", delivery_id=back) if back else url_for("console.deliveries"), 303)
    count = r.store.retry([job_id], now, now + r.settings.action_deadline, note=_note())
    if count:
        r.wake_dispatcher()
        log("console: action re-queued", job=job_id, address=auth.client_address())
    flash(f"action {job_id} re-queued: it runs now" if count else
          f"action {job_id} was not re-queued: only a dead action can be retried (it may have been retried already)")
    return redirect(url_for("console.delivery", delivery_id=back) if back else url_for("console.deliveries"), 303)


@bp.route("/retry-dead", methods=["GET", "POST"])
def retry_dead():
    source = request.form if request.method == "POST" else request.args
    wanted = read_filter(source)
    r = reactor()
    ids = r.store.dead_job_ids(**wanted.store_args())
    if request.method == "GET" or source.get("confirm") != "yes":
        return page("retry_dead.html", filter=wanted, ids=ids)
    now, note = time.time(), _note() + " (bulk retry of a filter)"
    allowed = [job_id for job_id in ids if not _refusal(r, job_id, now)]
    count = r.store.retry(allowed, now, now + r.settings.action_deadline, note=note)
    if count:
        r.wake_dispatcher()
    log("console: dead actions re-queued", count=count, address=auth.client_address())
    refused = len(ids) - len(allowed)
    flash(f"{count} dead action(s) re-queued" + (f"; {refused} refused: their meeting instance has ended or their "
                                                 f"deadline has passed (the CLI's retry --force sends them)"
                                                 if refused else ""))
    return redirect(url_for("console.deliveries", **dict(wanted.texts)), 303)


@bp.route("/<path:rest>", methods=["GET", "POST"])
def not_found(rest: str):
    return problem(404, "there is no such console page: start from the overview")
