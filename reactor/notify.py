"""Edge: chat incoming webhooks (alerts and the rules' `notify` action). The only room that knows
their HTTP; the Zoom client (reactor.zoom) knows nothing of it.

Formats (REACTOR_ALERT_FORMAT, or a notify action's `format`): `text` posts {"text": ...}, which Slack,
Mattermost, Google Chat and Microsoft Teams workflows ("Post to a channel when a webhook request is
received") accept; `content` posts {"content": ...} for Discord.

Alerts are raised by a sweep (every ALERT_SWEEP_EVERY seconds, in each web process): it finds the causes
in the store (a dead action, a start Zoom accepted but did not confirm in time, a stream stopped while its
meeting runs) and queues one `alert` job
per cause, with the dedup key alert:<cause>:<job id>, so however many processes sweep and however
often, a cause is queued once; a crash between the cause and its alert only delays the alert to the next
sweep. Queued alerts go out through the outbox like any call: retried, paced per chat host, recorded,
at least once (a process killed after the chat took the message but before recording it sends it again).
The URL is a secret: a job holds the setting's name (REACTOR_ALERT_URL) or the rule's `${NAME}`/`enc:`
reference, never the URL.
"""
from __future__ import annotations

import threading
import time

import requests

from . import outbound
from .delivery import NewDelivery
from .errors import StoreError, ZoomError
from .logs import log
from .plan import PlannedAction
from .retry_policy import Answer
from .rules.match import encode_verdict, encode_verdicts

TIMEOUT = (5, 10)          # connect, read seconds
ALERT_URL_SETTING = "REACTOR_ALERT_URL"  # what an alert job holds as its path: the setting's name
ALERT_RULE = "reactor alerts"
ALERT_SWEEP_EVERY = 5.0    # seconds between sweeps in a process
ALERT_WINDOW = 86400.0     # causes older than this raise no alert (turning alerts on does not replay history)
CHAT_RATE = 1.0            # messages per second per chat host (Slack's limit for an incoming webhook)
SIGNATURE_FAILURES = 20    # bad signatures in one process within SIGNATURE_WINDOW that raise an alert
SIGNATURE_WINDOW = 300.0
TEXT_MAX = 3000            # Slack's text limit is 40,000; a chat line should stay readable


def payload(fmt: str, text: str) -> dict:
    """The JSON body a chat takes: {"content": text} for Discord, else {"text": text}."""
    return {"content": text[:2000]} if fmt == "content" else {"text": text[:TEXT_MAX]}


class ChatSender:
    """Posts one JSON message; answers an Answer (judged by reactor.retry_policy) or raises ZoomError
    (the outbox's "no usable answer", retryable)."""

    def __init__(self, session: requests.Session | None = None):
        self._session = session or outbound.session()

    def post(self, url: str, body: dict) -> Answer:
        try:
            response = self._session.post(url, json=body, timeout=TIMEOUT, allow_redirects=False)
        except requests.RequestException as exc:
            raise ZoomError(f"the chat webhook did not answer ({type(exc).__name__})") from None
        retry_after = response.headers.get("Retry-After", "")
        return Answer(response.status_code, None, response.text[:200].strip(),
                      float(retry_after) if retry_after.isascii() and retry_after.isdigit() else None)


def _meeting(cause: dict) -> tuple[str, str]:
    """A cause's meeting id, and its topic as " (topic)" for a message ("" without one)."""
    obj = (cause["body"].get("payload") or {}).get("object") or {}
    topic = obj.get("topic")
    return cause["order_key"].rpartition("/")[2], f" ({topic})" if isinstance(topic, str) and topic else ""


def dead_text(cause: dict, public_url: str = "") -> str:
    """What an operator needs about a dead action: which rule, meeting and topic, what Zoom said, what to do."""
    meeting, topic = _meeting(cause)
    return (f":rotating_light: reactor: {cause['kind']} for meeting {meeting}"
            f"{topic} is dead (rule \"{cause['rule']}\"): {cause['last_message']}. "
            f"Nothing retries it now: fix the cause, then `python -m reactor retry {cause['id']}` "
            f"(`python -m reactor history --meeting {meeting}` shows what happened).")


def unconfirmed_text(cause: dict, timeout: int) -> str:
    meeting, topic = _meeting(cause)
    return (f":warning: reactor: Zoom accepted livestream.start for meeting {meeting}"
            f"{topic} (rule \"{cause['rule']}\") but has not reported the stream live "
            f"(meeting.live_streaming_started) within {timeout} s. Check the meeting's live stream in Zoom and the "
            f"streaming service (stream URL and key); `python -m reactor history --meeting {meeting}` shows the call.")


def stopped_text(cause: dict) -> str:
    meeting, topic = _meeting(cause)
    return (f":warning: reactor: Zoom reports the live stream of meeting {meeting}{topic} "
            f"stopped ({cause['kind']}) while the meeting is still running, and reactor did not stop it. Someone "
            f"stopped it in Zoom or the streaming service dropped it: start it again from the meeting's controls "
            f"(More > Live on Custom Live Streaming Service) and check the service.")


def alert_action(key: str, text: str) -> PlannedAction:
    return PlannedAction(rule=ALERT_RULE, kind="alert", method="POST", path=ALERT_URL_SETTING, body={"text": text},
                         order_key=key, account="chat")


def queue_alert(store, settings, key: str, text: str, now: float, about: dict) -> bool:
    """Queue one alert job under the deduplication key `key` (alert:<cause>:<id>); False when that cause
    already has its alert. Raises StoreError when the store cannot take it."""
    action = alert_action(key, text)
    delivery = NewDelivery(dedup_key=key, event="reactor.alert", event_ts_ms=int(now * 1000), received_at=now,
                           body={"alert": key, **about},
                           verdicts=encode_verdicts([encode_verdict(ALERT_RULE, True, key)]), order_key=key)
    accepted = store.accept(delivery, [action], now + settings.action_deadline)
    if not accepted.duplicate:
        log("alert queued", alert=key, delivery=accepted.delivery_id)
    return not accepted.duplicate


def raise_alerts(store, settings, now: float | None = None) -> int:
    """Queue one alert per new cause the store shows (dead actions; starts unconfirmed after
    REACTOR_CONFIRM_TIMEOUT; streams stopped unexpectedly); return how many this call queued."""
    now = time.time() if now is None else now
    texts = {"dead": dead_text, "unconfirmed": lambda c: unconfirmed_text(c, settings.confirm_timeout),
             "stopped": stopped_text}
    queued = 0
    for cause in store.alert_causes(now, settings.confirm_timeout, now - ALERT_WINDOW):
        kind = cause["cause"]
        queued += queue_alert(store, settings, f"alert:{kind}:{cause['id']}", texts[kind](cause), now,
                              {"cause": kind, "id": cause["id"]})
    return queued


class AlertSweep:
    """The housekeeping task of a web process: raise_alerts at most every ALERT_SWEEP_EVERY seconds, and
    queue what this process noted meanwhile (a rejected reload, 503s, bad signatures) as soon as the
    store takes it. Wakes the dispatcher when it queued something."""

    __name__ = "alert_sweep"

    def __init__(self, store, settings, wake=lambda: None, clock=time.monotonic, now=time.time,
                 signature_threshold: int = SIGNATURE_FAILURES):
        self.store, self.settings, self.wake, self.clock, self.now = store, settings, wake, clock, now
        self.signature_threshold = signature_threshold
        self._at = float("-inf")
        self._lock = threading.Lock()
        self._noted: dict[str, str] = {}          # key -> text, queued at the next tick the store takes it
        self._outage: list[float] = []             # [first, last, count] of 503s not yet alerted
        self._bad: list[float] = []                # times of bad signatures in the last SIGNATURE_WINDOW

    def note(self, key: str, text: str, latest: bool = False) -> None:
        """Queue an alert at the next tick (kept until the store takes it); `latest`: this text replaces
        a waiting one with the same key."""
        with self._lock:
            if latest:
                self._noted[key] = text
            else:
                self._noted.setdefault(key, text)

    def refused(self) -> None:
        """A delivery was answered 503 (the database refused it)."""
        now = self.now()
        with self._lock:
            self._outage = [self._outage[0], now, self._outage[2] + 1] if self._outage else [now, now, 1]

    def inbox_full(self) -> None:
        """A delivery was answered 503 because more than REACTOR_INBOX_LIMIT wait to be ingested."""
        now = self.now()
        self.note(f"alert:inbox:{int(now // 300)}",
                  f":rotating_light: reactor: more than {self.settings.inbox_limit:,} acknowledged deliveries wait to "
                  f"be ingested, so new webhooks are answered 503 (Zoom retries them after 5, 25 and 85 minutes). "
                  f"With REACTOR_INGEST=off, is `python -m reactor worker` running? Else the database may be "
                  f"holding the ingest up: `python -m reactor doctor` checks it. /metrics shows "
                  f"reactor_inbox_backlog.")

    def bad_signature(self) -> None:
        now = self.now()
        with self._lock:
            self._bad = [t for t in self._bad if t > now - SIGNATURE_WINDOW] + [now]
            if len(self._bad) != self.signature_threshold:
                return
        bucket = int(now // SIGNATURE_WINDOW)
        self.note(f"alert:signatures:{bucket}",
                  f":warning: reactor: {self.signature_threshold} webhook requests with a wrong or missing signature "
                  f"within {SIGNATURE_WINDOW / 60:.0f} min (in one process). If Zoom's Secret Token was regenerated, "
                  f"set the new one as ZOOM_WEBHOOK_SECRET_TOKEN; else someone is probing the endpoint (the log "
                  f"lists the refused requests).")

    def __call__(self) -> None:
        with self._lock:
            outage = tuple(self._outage)
        if outage:  # noted again each tick with the latest count, until the store takes it
            first, last, count = outage
            self.note(f"alert:outage:{int(first // 300)}",
                      f":rotating_light: reactor: the database refused {count:.0f} webhook deliveries (answered 503) "
                      f"between {_utc(first)} and {_utc(last)} UTC in one process. Zoom retries a refused delivery "
                      f"after 5, 25 and 85 minutes; `python -m reactor doctor` checks the database now.", latest=True)
        try:
            with self._lock:
                noted = list(self._noted.items())
            queued = 0
            for key, text in noted:
                queued += queue_alert(self.store, self.settings, key, text, self.now(), {})
                with self._lock:
                    if self._noted.get(key) == text:
                        del self._noted[key]
                    if key.startswith("alert:outage:") and tuple(self._outage) == outage:
                        self._outage = []  # sent; 503s after this snapshot stay for a later alert
            if self.clock() - self._at >= ALERT_SWEEP_EVERY:
                self._at = self.clock()
                queued += raise_alerts(self.store, self.settings)
            if queued:
                self.wake()
        except StoreError as exc:
            log("alerts: the store is unavailable; the next tick tries again", 30, error=str(exc))


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))
