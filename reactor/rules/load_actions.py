"""Pure: the `do:` part of a rule: actions, their settings, templates and secret references."""
from __future__ import annotations

import re
from typing import Any

from ..errors import SecretError
from ..secrets import check_secret
from .model import FIELD_PATH, ActionSpec, Secret, Template
from .source import LList, LMap, suggest

ACTION_ARGS = {
    "livestream.start": {"display_name": str, "active_speaker_name": bool, "layout": str, "close_caption": str},
    "livestream.stop": {},
    "livestream.configure": {"stream_url": str, "stream_key": str, "page_url": str, "resolution": str},
}
REQUIRED_ARGS = {"livestream.configure": ("stream_url", "stream_key", "page_url")}
RESOLUTIONS = ("720p", "1080p")
_TEMPLATE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


class ActionParser:
    """Mixed into the rule parser: needs self.problem(line, message), self.env, self.secret_key,
    self.resolve_secrets."""

    def parse_actions(self, item: LMap) -> tuple:
        if "do" not in item:
            self.problem(item.line, "a rule needs 'do:' (a list of actions such as livestream.start)")
            return ()
        steps, line = item["do"], item.line_of("do")
        if isinstance(steps, (str, LMap)):
            steps = LList([steps])
            steps.line, steps.item_lines = line, [line]
        if not isinstance(steps, LList) or not steps:
            self.problem(line, "'do' must list at least one action (livestream.configure, livestream.start, livestream.stop)")
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
            if key == "resolution" and text not in RESOLUTIONS:
                self.problem(key_line, f"{kind}: resolution must be 720p or 1080p{suggest(text, RESOLUTIONS)}")
                continue
            args.append((key, self.parse_string(text, key_line, f"{kind}: {key}")))
        for key in REQUIRED_ARGS.get(kind, ()):
            if key not in node:
                self.problem(line, f"{kind}: '{key}' is required")
        return ActionSpec(kind, tuple(args), line)

    def parse_string(self, text: str, line: int, where: str):
        """A literal, a Template with {{ field }} parts, or a Secret (${NAME} or enc:)."""
        is_secret = "${" in text or text.startswith("enc:")
        fields = _TEMPLATE.findall(text)
        if is_secret and fields:
            self.problem(line, f"{where}: a value uses ${{NAME}}/enc: or {{{{ field }}}}, not both")
            return text
        if is_secret:
            try:
                check_secret(text, self.env, self.secret_key, resolve=self.resolve_secrets)
            except SecretError as exc:
                self.problem(line, f"{where}: {exc}")
            return Secret(text)
        if not fields:
            if "{{" in text:
                self.problem(line, f"{where}: unclosed or empty '{{{{ }}}}' in {text!r}")
            return text
        parts: list = []
        position = 0
        for match in _TEMPLATE.finditer(text):
            if match.start() > position:
                parts.append(text[position:match.start()])
            path = match.group(1)
            if not FIELD_PATH.match(path):
                self.problem(line, f"{where}: {{{{ {path} }}}} is not a field path such as topic")
            parts.append(("field", path))
            position = match.end()
        if position < len(text):
            parts.append(text[position:])
        return Template(tuple(parts))

