"""The retry policy as a table: each answer Zoom documents for the live stream calls (PLATFORM.md),
and each way a call can fail, to what is recorded, the job's new status and when it is tried again."""
import pytest

from reactor.delivery import Job
from reactor.errors import TokenError, ZoomError, ZoomUnreachable
from reactor.plan import PlannedAction
from reactor.retry_policy import SCOPE_HINT, Answer, after_call, backoff, before_call

T = 1_000_000.0            # when the call was made
TOOK = 250.0               # ms until the answer: delays count from T + 0.25
DEADLINE = T + 1800
ACTION = PlannedAction("Stream town halls", "livestream.start", "PATCH", "/meetings/85746065432/livestream/status",
                       {"action": "start"}, "meetings/85746065432", "acct")
SENT = {"method": "PATCH", "path": ACTION.path, "body": {"action": "start"}}


def job(failures=0, deadline=DEADLINE) -> Job:
    return Job(7, 3, ACTION, int(T * 1000), deadline, attempts=failures + 1, status="running", failures=failures)


def half(): return 0.5  # no jitter: backoff(n) is exactly its base


# (result, job, status, outcome, due_at, counts as a failure, message, http status, Zoom code)
CASES = {
    "204 started": (Answer(204), job(), "done", "done", None, False, "ok", 204, None),
    "300 invalid meeting id": (Answer(300, 300, "Invalid meeting id."), job(), "dead", "dead", None, False,
                               "Zoom answered 300 code 300: Invalid meeting id.", 300, 300),
    "400 code 3000 webinar": (Answer(400, 3000, "Cannot access webinar info."), job(), "dead", "dead", None, False,
                              "Zoom answered 400 code 3000: Cannot access webinar info.", 400, 3000),
    "400 code 1010 other account": (Answer(400, 1010, "User does not belong to this account"), job(), "dead", "dead",
                                    None, False, "Zoom answered 400 code 1010: User does not belong to this account",
                                    400, 1010),
    "404 code 1001 no user": (Answer(404, 1001, "User does not exist."), job(), "dead", "dead", None, False,
                              "Zoom answered 404 code 1001: User does not exist.", 404, 1001),
    "400 code 4700 missing scope": (Answer(400, 4700, "Invalid access token, does not contain scopes."), job(),
                                    "dead", "dead", None, False,
                                    f"Zoom answered 400 code 4700: Invalid access token, does not contain scopes. "
                                    f"({SCOPE_HINT})", 400, 4700),
    "401 after the fresh-token retry": (Answer(401, 124, "Invalid access token."), job(), "dead", "dead", None, False,
                                        "Zoom answered 401 code 124: Invalid access token.", 401, 124),
    "429 with Retry-After": (Answer(429, None, "Too many requests", retry_after=12), job(), "pending", "rate_limited",
                             T + 0.25 + 12, False, "rate limited (Too many requests); retry after 12 s", 429, None),
    "429 without Retry-After: 30 s": (Answer(429), job(), "pending", "rate_limited", T + 0.25 + 30, False,
                                      "rate limited (too many requests); retry after 30 s", 429, None),
    "429 past the deadline": (Answer(429, retry_after=60), job(deadline=T + 30), "dead", "dead", None, False,
                              "rate limited (too many requests); retry after 60 s, past the deadline", 429, None),
    "500 first failure: 1 s": (Answer(500, None, "Internal Server Error"), job(), "pending", "retry", T + 0.25 + 1,
                               True, "Zoom answered 500: Internal Server Error", 500, None),
    "503 fourth failure: 8 s": (Answer(503, None, "busy"), job(failures=3), "pending", "retry", T + 0.25 + 8, True,
                                "Zoom answered 503: busy", 503, None),
    "502 tenth failure: capped at 60 s": (Answer(502, None, "bad"), job(failures=9), "pending", "retry",
                                          T + 0.25 + 60, True, "Zoom answered 502: bad", 502, None),
    "5xx past the deadline": (Answer(500, None, "x"), job(failures=9, deadline=T + 10), "dead", "dead", None, False,
                              "Zoom answered 500: x; gave up at the deadline", 500, None),
    "timeout": (ZoomUnreachable("no answer from Zoom within the timeout (ReadTimeout)"), job(), "pending", "retry",
                T + 0.25 + 1, True, "no answer from Zoom within the timeout (ReadTimeout)", None, None),
    "connection refused": (ZoomUnreachable("cannot reach Zoom (ConnectionError)"), job(failures=1), "pending", "retry",
                           T + 0.25 + 2, True, "cannot reach Zoom (ConnectionError)", None, None),
    "unreachable past the deadline": (ZoomUnreachable("cannot reach Zoom (ConnectionError)"), job(deadline=T), "dead",
                                      "dead", None, False, "cannot reach Zoom (ConnectionError); gave up at the deadline",
                                      None, None),
    "token endpoint down": (TokenError("the token endpoint answered 503", True), job(), "pending", "retry",
                            T + 0.25 + 1, True, "OAuth token: the token endpoint answered 503", None, None),
    "token refused: wrong credentials": (TokenError("the token endpoint answered 401 (Bad Request)", False), job(),
                                         "dead", "dead", None, False,
                                         "OAuth token: the token endpoint answered 401 (Bad Request)", None, None),
    "other failure, not retryable": (ZoomError("the call to Zoom failed (InvalidURL)", False), job(), "dead", "dead",
                                     None, False, "the call to Zoom failed (InvalidURL)", None, None),
}


@pytest.mark.parametrize("result, the_job, status, outcome, due, failure, message, http, code",
                         list(CASES.values()), ids=list(CASES))
def test_after_call(result, the_job, status, outcome, due, failure, message, http, code):
    decision = after_call(the_job, result, T, TOOK, SENT, rng=half)
    assert (decision.status, decision.attempt.outcome, decision.failure) == (status, outcome, failure)
    assert decision.due_at == pytest.approx(due) if due is not None else decision.due_at is None
    assert decision.attempt.next_at == decision.due_at
    assert (decision.attempt.message, decision.attempt.http_status, decision.attempt.zoom_code) == (message, http, code)
    assert decision.attempt.at == T and decision.attempt.sent == SENT


BEFORE = {
    "due and free: call": (T, False, False, False, None, None),
    "past the deadline": (DEADLINE + 1, False, False, False, "dead", "older than REACTOR_ACTION_DEADLINE"),
    "a later event already acted": (T, True, False, False, "skipped", "a later event's action"),
    "an earlier action of the rule failed": (T, False, True, False, "skipped", "an earlier action of this rule"),
    "dry run": (T, False, False, True, "done", "dry run: not sent"),
    "deadline beats everything": (DEADLINE + 1, True, True, True, "dead", "older than REACTOR_ACTION_DEADLINE"),
}


@pytest.mark.parametrize("now, superseded, failed_before, dry_run, status, message", list(BEFORE.values()),
                         ids=list(BEFORE))
def test_before_call(now, superseded, failed_before, dry_run, status, message):
    decision = before_call(job(), now, SENT, superseded=superseded, failed_before=failed_before, dry_run=dry_run)
    if status is None:
        assert decision is None
    else:
        assert decision.status == status and message in decision.attempt.message and decision.due_at is None


def test_a_retry_reached_after_the_deadline_says_it_gave_up_there_not_that_the_event_was_late():
    """A retry due just before the deadline can be claimed just after it (idle dispatchers look for due
    retries every 0.5 s): its message is the one a retry scheduled past the deadline gets, not the late
    event's. A first attempt past the deadline is a late event."""
    late_retry = before_call(job(failures=1), DEADLINE + 0.2, SENT, superseded=False, failed_before=False,
                             dry_run=False)
    assert late_retry.status == "dead" and "gave up at the deadline" in late_retry.attempt.message
    assert "older than" not in late_retry.attempt.message
    late_event = before_call(job(), DEADLINE + 0.2, SENT, superseded=False, failed_before=False, dry_run=False)
    assert late_event.status == "dead" and "older than REACTOR_ACTION_DEADLINE" in late_event.attempt.message


@pytest.mark.parametrize("failures, low, high", [(1, 0.8, 1.2), (2, 1.6, 2.4), (3, 3.2, 4.8), (6, 25.6, 38.4),
                                                 (7, 48, 72), (8, 48, 72), (50, 48, 72)])
def test_backoff_doubles_from_1_s_to_a_60_s_cap_with_20_percent_jitter(failures, low, high):
    assert backoff(failures, rng=lambda: 0.0) == pytest.approx(low)
    assert backoff(failures, rng=lambda: 0.999999) == pytest.approx(high, rel=1e-5)


STOP = PlannedAction("Stop", "livestream.stop", "PATCH", "/meetings/85746065432/livestream/status",
                     {"action": "stop"}, "meetings/85746065432", "acct")


@pytest.mark.parametrize("answer, status, message", [
    pytest.param(Answer(400, 3001, "Meeting is not in progress."), "done",
                 "nothing to stop: Zoom answered 400 code 3001: Meeting is not in progress.", id="stop-not-running"),
    pytest.param(Answer(404, None, "Not Found"), "done", "nothing to stop: Zoom answered 404: Not Found",
                 id="stop-no-stream"),
    pytest.param(Answer(404, 1001, "User does not exist."), "dead", "Zoom answered 404 code 1001: User does not exist.",
                 id="stop-config-problem-stays-dead"),
    pytest.param(Answer(400, 4711, "Invalid access token, does not contain scopes:[meeting:update:livestream_status:admin]"),
                 "dead", "Zoom answered 400 code 4711: Invalid access token, does not contain scopes:"
                 "[meeting:update:livestream_status:admin] (add the scope meeting:update:livestream_status:admin to "
                 "the app on Zoom's App Marketplace, then retry)", id="stop-missing-scope-4711"),
])
def test_a_stop_that_finds_nothing_to_stop_is_done_not_dead(answer, status, message):
    the_job = Job(8, 3, STOP, int(T * 1000), DEADLINE, attempts=1, status="running")
    decision = after_call(the_job, answer, T, TOOK, SENT, rng=half)
    assert (decision.status, decision.attempt.message) == (status, message)


def test_4711_names_the_missing_scopes_on_a_start():
    decision = after_call(job(), Answer(400, 4711, "Invalid access token, does not contain scopes:[a:b, c:d]"), T,
                          TOOK, SENT)
    assert decision.status == "dead" and decision.attempt.message.endswith(
        "(add the scopes a:b, c:d to the app on Zoom's App Marketplace, then retry)")


def test_a_429_whose_retry_after_is_now_or_past_backs_off_instead_of_asking_again_at_once():
    """Retry-After 0, or a time already past on this clock (clocks a second apart), made the job due at
    once: each try one more 429 against the account's limit, at the pacing rate, until the deadline."""
    answered = T + TOOK / 1000
    dues = [after_call(job(), Answer(429, retry_after=0.0), T, TOOK, SENT, rng=half).due_at - answered]
    for attempts in (3, 7, 12):
        the_job = Job(7, 3, ACTION, int(T * 1000), DEADLINE, attempts=attempts, status="running", failures=0)
        decision = after_call(the_job, Answer(429, retry_after=0.0), T, TOOK, SENT, rng=half)
        assert decision.status == "pending" and not decision.failure, "a 429 is not a failure"
        dues.append(decision.due_at - answered)
    assert dues == pytest.approx([1.0, 4.0, 60.0, 60.0])  # the backoff by attempts, from 1 s to its 60 s cap
    assert after_call(job(), Answer(429, retry_after=2.0), T, TOOK, SENT, rng=half).due_at - answered == \
        pytest.approx(2.0), "a Retry-After in the future is followed as given"
