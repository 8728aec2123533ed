"""Pure: the `do:` part of a rule: actions, their settings, templates and secret references."""
from __future__ import annotations

import re
from typing import Any

from ..errors import SecretError
from ..redact import SECRET_FIELDS
from ..secrets import check_secret
from .model import FIELD_PATH, ActionSpec, Secret, Template
from .source import LList, LMap, suggest

ACTION_ARGS = {
    "livestream.start": {"display_name": str, "active_speaker_name": bool, "layout": str, "close_caption": str},
    "livestream.stop": {},
    "livestream.configure": {"stream_url": str, "stream_key": str, "page_url": str, "resolution": str},
    "notify": {"url": str, "text": str, "format": str},  # a chat incoming webhook (reactor.notify)
}
REQUIRED_ARGS = {"livestream.configure": ("stream_url", "stream_key", "page_url"), "notify": ("url", "text")}
RESOLUTIONS = ("720p", "1080p")
# Zoom's values (its API reference, as typed in Zoom's Rivet SDK; see README "Writing rules").
CHOICES = {
    "layout": ("follow_host", "gallery_view", "speaker_view"),
    "close_caption": ("burnt-in", "embedded", "off"),
    "resolution": RESOLUTIONS,
    "format": ("text", "content"),  # notify: {"text": ...} (Slack, Mattermost, Google Chat, Teams) or Discord's
}
MEETING_ONLY = ("layout", "close_caption")  # Zoom's webinar live stream takes display_name, active_speaker_name
DISPLAY_NAME_MAX = 50
_TEMPLATE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


class ActionParser:
    """Mixed into the rule parser: needs self.problem(line, message), self.warn(line, message), self.env,
    self.secret_key, self.resolve_secrets, self.rule_events and self.check_field(path, line, where)."""

    def parse_actions(self, item: LMap) -> tuple:
        if "do" not in item:
            self.problem(item.line, "a rule needs 'do:' (a list of actions such as livestream.start)")
            return ()
        steps, line = item["do"], item.line_of("do")
        if isinstance(steps, (str, LMap)):
            steps = LList([steps])
            steps.line, steps.item_lines = line, [line]
        if not isinstance(steps, LList) or not steps:
            self.problem(line, "'do' must list at least one action (livestream.configure, livestream.start, "
                               "livestream.stop, notify)")
            return ()
        actions = []
        for index, step in enumerate(steps):
            step_line = steps.line_of(index)
            if isinstance(step, str):
                kind, args, args_node = step, None, None
            elif isinstance(step, LMap) and len(step) == 1:
                kind, args = next(iter(step.items()))
                args_node = args
            else:
                self.problem(step_line, "an action is a name (livestream.stop) or a one-key mapping (livestream.start: {...})")
                continue
            if kind not in ACTION_ARGS:
                self.problem(step_line, f"unknown action {kind!r}{suggest(kind, ACTION_ARGS)}")
                continue
            actions.append(self.parse_action_args(kind, args_node, step_line))
        return tuple(actions)

    def parse_action_args(self, kind: str, node: Any, line: int) -> ActionSpec:
        allowed = ACTION_ARGS[kind]
        if node is None:
            node = LMap()
            node.line, node.key_lines, node.raw = line, {}, {}
        if not isinstance(node, LMap):
            self.problem(line, f"{kind}: its settings must be a mapping")
            return ActionSpec(kind, (), line)
        args = []
        for key, value in node.items():
            key_line = node.line_of(key)
            if key not in allowed:
                hint = suggest(key, allowed) or (f" ({kind} takes no settings)" if not allowed else
                                                 f" (it takes {', '.join(allowed)})")
                self.problem(key_line, f"{kind}: unknown setting {key!r}{hint}")
                continue
            if allowed[key] is bool:
                if not isinstance(value, bool):
                    self.problem(key_line, f"{kind}: '{key}' must be true or false")
                    continue
                args.append((key, value))
                continue
            text = value if isinstance(value, str) else node.raw.get(key)
            if not isinstance(text, str) or value is None or isinstance(value, bool):
                self.problem(key_line, f"{kind}: '{key}' must be a string")
                continue
            if key in CHOICES and text not in CHOICES[key]:
                self.problem(key_line, f"{kind}: {key} must be {' or '.join(CHOICES[key])}, not {text!r}"
                                       f"{suggest(text, CHOICES[key])}")
                continue
            if key in MEETING_ONLY and not self.meeting_setting_fits(kind, key, key_line):
                continue
            parsed = self.parse_string(text, key_line, f"{kind}: {key}: ")
            if key in SECRET_FIELDS and isinstance(parsed, str):
                self.warn(key_line, f"{kind}: {key} is written in the rule file: whoever can read the file (or "
                                    f"its repository) can use it; put it in an environment variable and write "
                                    f"${{NAME}}, or seal it with `python -m reactor encrypt` and write the enc: value")
            if key == "display_name":
                self.check_display_name(parsed, key_line, kind)
            args.append((key, parsed))
        for key in REQUIRED_ARGS.get(kind, ()):
            if key not in node:
                self.problem(line, f"{kind}: '{key}' is required")
        if kind == "notify":
            self.check_notify(dict(args), node, line)
        return ActionSpec(kind, tuple(args), line)

    def check_notify(self, args: dict, node: LMap, line: int) -> None:
        """A chat webhook's URL is a credential (whoever has it can post): only as ${NAME} or enc:. The
        text is posted where many read it: no secret in it."""
        if "url" in args and not isinstance(args["url"], Secret):
            self.problem(node.line_of("url"), "notify: url must be a secret reference such as ${SLACK_WEBHOOK_URL} "
                                              "or an enc: value (`python -m reactor encrypt`): a chat webhook URL "
                                              "lets whoever reads it post to the channel")
        if isinstance(args.get("text"), Secret):
            self.problem(node.line_of("text"), "notify: text is posted to a chat channel; it may not hold a secret")

    def meeting_setting_fits(self, kind: str, key: str, line: int) -> bool:
        """layout and close_caption are meeting settings: an error on a webinar-only rule, a warning on a
        rule on both (plan leaves them out of webinar calls)."""
        webinar = [e for e in self.rule_events if e.startswith("webinar.")]
        if not webinar:
            return True
        if len(webinar) == len(self.rule_events):
            self.problem(line, f"{kind}: '{key}' is a meeting setting; Zoom's webinar live stream takes only "
                               f"display_name and active_speaker_name: remove it (the rule is on webinar events only)")
            return False
        self.warn(line, f"{kind}: '{key}' is a meeting setting: it is sent for meetings and left out for "
                        f"{', '.join(webinar)}; to say so explicitly, split the rule into a meeting and a webinar rule")
        return True

    def check_display_name(self, value, line: int, kind: str) -> None:
        """Zoom takes 1 to 50 characters: a literal must fit; a template's fixed text must too."""
        if isinstance(value, str):
            size = len(value.strip())
            if not 1 <= size <= DISPLAY_NAME_MAX:
                self.problem(line, f"{kind}: display_name is {size} characters; Zoom takes 1 to {DISPLAY_NAME_MAX}")
        elif isinstance(value, Template):
            fixed = sum(len(part) for part in value.parts if isinstance(part, str))
            if fixed > DISPLAY_NAME_MAX:
                self.problem(line, f"{kind}: display_name's fixed text alone is {fixed} characters; Zoom takes at "
                                   f"most {DISPLAY_NAME_MAX}")

    def parse_string(self, text: str, line: int, where: str):
        """A literal, a Template with {{ field }} parts, or a Secret (${NAME} or enc:)."""
        is_secret = "${" in text or text.startswith("enc:")
        fields = _TEMPLATE.findall(text)
        if is_secret and fields:
            self.problem(line, f"{where}a value uses ${{NAME}}/enc: or {{{{ field }}}}, not both")
            return text
        if is_secret:
            try:
                check_secret(text, self.env, self.secret_key, resolve=self.resolve_secrets)
            except SecretError as exc:
                self.problem(line, f"{where}{exc}")
            return Secret(text)
        if not fields:
            if "{{" in text:
                self.problem(line, f"{where}unclosed or empty '{{{{ }}}}' in {text!r}")
            return text
        parts: list = []
        position = 0
        for match in _TEMPLATE.finditer(text):
            if match.start() > position:
                parts.append(text[position:match.start()])
            path = match.group(1)
            if not FIELD_PATH.match(path):
                self.problem(line, f"{where}{{{{ {path} }}}} is not a field path such as topic")
            else:
                self.check_field(path, line, f"{where}{{{{ {path} }}}}: ")
            parts.append(("field", path))
            position = match.end()
        if position < len(text):
            parts.append(text[position:])
        return Template(tuple(parts))

