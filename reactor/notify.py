"""Edge: chat incoming webhooks (alerts and the rules' `notify` action). The only room that knows
their HTTP; the Zoom client (reactor.zoom) knows nothing of it.

Formats (REACTOR_ALERT_FORMAT, or a notify action's `format`): `text` posts {"text": ...}, which Slack,
Mattermost, Google Chat and Microsoft Teams workflows ("Post to a channel when a webhook request is
received") accept; `content` posts {"content": ...} for Discord.

Alerts are raised by a sweep (every ALERT_SWEEP_EVERY seconds, in each web process): it finds the causes
in the store (a dead action, a start Zoom accepted but did not confirm in time) and queues one `alert` job
per cause, with the dedup key alert:<cause>:<job id>, so however many processes sweep and however
often, a cause is queued once; a crash between the cause and its alert only delays the alert to the next
sweep. Queued alerts go out through the outbox like any call: retried, paced per chat host, recorded,
at least once (a process killed after the chat took the message but before recording it sends it again).
The URL is a secret: a job holds the setting's name (REACTOR_ALERT_URL) or the rule's `${NAME}`/`enc:`
reference, never the URL.
"""
from __future__ import annotations

import time

import requests

from .delivery import NewDelivery
from .errors import StoreError, ZoomError
from .logs import log
from .plan import PlannedAction
from .retry_policy import Answer

TIMEOUT = (5, 10)          # connect, read seconds
ALERT_URL_SETTING = "REACTOR_ALERT_URL"  # what an alert job holds as its path: the setting's name
ALERT_RULE = "reactor alerts"
ALERT_SWEEP_EVERY = 5.0    # seconds between sweeps in a process
ALERT_WINDOW = 86400.0     # causes older than this raise no alert (turning alerts on does not replay history)
CHAT_RATE = 1.0            # messages per second per chat host (Slack's limit for an incoming webhook)
TEXT_MAX = 3000            # Slack's text limit is 40,000; a chat line should stay readable


def payload(fmt: str, text: str) -> dict:
    """The JSON body a chat takes: {"content": text} for Discord, else {"text": text}."""
    return {"content": text[:2000]} if fmt == "content" else {"text": text[:TEXT_MAX]}


class ChatSender:
    """Posts one JSON message; answers an Answer (judged by reactor.retry_policy) or raises ZoomError
    (the outbox's "no usable answer", retryable)."""

    def __init__(self, session: requests.Session | None = None):
        self._session = session or requests.Session()

    def post(self, url: str, body: dict) -> Answer:
        try:
            response = self._session.post(url, json=body, timeout=TIMEOUT, allow_redirects=False)
        except requests.RequestException as exc:
            raise ZoomError(f"the chat webhook did not answer ({type(exc).__name__})") from None
        retry_after = response.headers.get("Retry-After", "")
        return Answer(response.status_code, None, response.text[:200].strip(),
                      float(retry_after) if retry_after.isdigit() else None)


def _topic(body: dict) -> str:
    obj = (body.get("payload") or {}).get("object") or {}
    topic = obj.get("topic")
    return topic if isinstance(topic, str) else ""


def dead_text(cause: dict, public_url: str = "") -> str:
    """What an operator needs about a dead action: which rule, meeting and topic, what Zoom said, what to do."""
    meeting = cause["order_key"].rpartition("/")[2]
    topic = _topic(cause["body"])
    return (f":rotating_light: reactor: {cause['kind']} for meeting {meeting}"
            f"{f' ({topic})' if topic else ''} is dead (rule \"{cause['rule']}\"): {cause['last_message']}. "
            f"Nothing retries it now: fix the cause, then `python -m reactor retry {cause['id']}` "
            f"(`python -m reactor history --meeting {meeting}` shows what happened).")


def unconfirmed_text(cause: dict, timeout: int) -> str:
    meeting = cause["order_key"].rpartition("/")[2]
    topic = _topic(cause["body"])
    return (f":warning: reactor: Zoom accepted livestream.start for meeting {meeting}"
            f"{f' ({topic})' if topic else ''} (rule \"{cause['rule']}\") but has not reported the stream live "
            f"(meeting.live_streaming_started) within {timeout} s. Check the meeting's live stream in Zoom and the "
            f"streaming service (stream URL and key); `python -m reactor history --meeting {meeting}` shows the call.")


def alert_action(cause_kind: str, job_id: int, text: str) -> PlannedAction:
    key = f"alert:{cause_kind}:{job_id}"
    return PlannedAction(rule=ALERT_RULE, kind="alert", method="POST", path=ALERT_URL_SETTING, body={"text": text},
                         order_key=key, account="chat")


def raise_alerts(store, settings, now: float | None = None) -> int:
    """Queue one alert per new cause (dead actions; starts unconfirmed after REACTOR_CONFIRM_TIMEOUT);
    return how many were queued by this call."""
    now = time.time() if now is None else now
    queued = 0
    for cause in store.alert_causes(now, settings.confirm_timeout, now - ALERT_WINDOW):
        kind = cause["cause"]
        text = dead_text(cause) if kind == "dead" else unconfirmed_text(cause, settings.confirm_timeout)
        action = alert_action(kind, cause["id"], text)
        delivery = NewDelivery(dedup_key=action.order_key, event="reactor.alert", event_ts_ms=int(now * 1000),
                               received_at=now, body={"alert": kind, "job": cause["id"]},
                               verdicts=[{"rule": ALERT_RULE, "matched": True, "why": f"{kind} action {cause['id']}"}],
                               order_key=action.order_key)
        accepted = store.accept(delivery, [action], now + settings.action_deadline)
        if not accepted.duplicate:
            queued += 1
            log("alert queued", cause=kind, job=cause["id"], delivery=accepted.delivery_id)
    return queued


class AlertSweep:
    """The housekeeping task: raise_alerts at most every ALERT_SWEEP_EVERY seconds; wakes the dispatcher."""

    __name__ = "alert_sweep"

    def __init__(self, store, settings, wake=lambda: None, clock=time.monotonic):
        self.store, self.settings, self.wake, self.clock = store, settings, wake, clock
        self._at = float("-inf")

    def __call__(self) -> None:
        if self.clock() - self._at < ALERT_SWEEP_EVERY:
            return
        self._at = self.clock()
        try:
            if raise_alerts(self.store, self.settings):
                self.wake()
        except StoreError as exc:
            log("alerts: the store is unavailable; the next sweep tries again", 30, error=str(exc))
