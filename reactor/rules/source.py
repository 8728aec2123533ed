"""Pure: YAML rule files to plain values that remember their line numbers.

The resolver is YAML 1.2's core schema, not PyYAML's YAML 1.1 default: `on`, `yes`, `no`, `off`
stay strings (so `on:` is a key), and only decimal integers without leading zeros are numbers
(so `0800` stays the string the author wrote).
"""
from __future__ import annotations

import difflib
import re
from typing import Any

import yaml

from ..errors import YamlProblem

MAX_NODES = 200_000
MAX_DEPTH = 40


class LMap(dict):
    """A mapping that knows its own line and the line of each key."""

    line: int = 0
    key_lines: dict
    raw: dict  # key -> the scalar's text as written

    def line_of(self, key) -> int:
        return self.key_lines.get(key, self.line)


class LList(list):
    """A list that knows its own line and the line of each item."""

    line: int = 0
    item_lines: list

    def line_of(self, index: int) -> int:
        return self.item_lines[index] if 0 <= index < len(self.item_lines) else self.line


# libyaml's C parser when PyYAML has it (the wheels do): ten times faster on 10,000 rules.
_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):
    yaml_implicit_resolvers: dict = {}


_Loader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^[-+]?(?:0|[1-9][0-9]*)$", "-+0123456789"),
    ("tag:yaml.org,2002:float", r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$", "-+0123456789."),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
):
    _Loader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))

_SCALARS = {
    "tag:yaml.org,2002:str": str,
    "tag:yaml.org,2002:bool": lambda v: v.lower() == "true",
    "tag:yaml.org,2002:int": int,
    "tag:yaml.org,2002:float": float,
    "tag:yaml.org,2002:null": lambda v: None,
}


def parse_yaml(text: str):
    """Parse one YAML document into LMap/LList/scalars; raise YamlProblem with a line number."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = exc.problem or str(exc)
        raise YamlProblem(line, f"not valid YAML: {problem}{_hint(problem, text, line)}") from None
    except yaml.YAMLError as exc:
        raise YamlProblem(1, f"not valid YAML: {exc}") from None
    if node is None:
        return None
    budget = [MAX_NODES]
    return _convert(node, 0, budget)


def _hint(problem: str, text: str, line: int) -> str:
    """What to do about YAML's two most common surprises in rule files."""
    lines = text.splitlines()
    here = lines[line - 1] if 0 < line <= len(lines) else ""
    if "escape" in problem:
        return ": write regexes in single quotes ('...') so backslashes stay as written"
    if "\\t" in problem or "tab" in problem or "\t" in here[:len(here) - len(here.lstrip())]:
        return ": use spaces, not tabs, for indentation"
    return ""


def _convert(node, depth: int, budget: list):
    line = node.start_mark.line + 1
    budget[0] -= 1
    if budget[0] < 0:
        raise YamlProblem(line, f"the file expands to more than {MAX_NODES} values (aliases?): split it up")
    if depth > MAX_DEPTH:
        raise YamlProblem(line, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, yaml.ScalarNode):
        make = _SCALARS.get(node.tag)
        if make is None:
            raise YamlProblem(line, f"the tag {node.tag} is not allowed in rule files")
        return make(node.value)
    if isinstance(node, yaml.SequenceNode):
        if node.tag != "tag:yaml.org,2002:seq":
            raise YamlProblem(line, f"the tag {node.tag} is not allowed in rule files")
        out = LList(_convert(item, depth + 1, budget) for item in node.value)
        out.line, out.item_lines = line, [item.start_mark.line + 1 for item in node.value]
        return out
    if node.tag != "tag:yaml.org,2002:map":
        raise YamlProblem(line, f"the tag {node.tag} is not allowed in rule files")
    out = LMap()
    out.line, out.key_lines, out.raw = line, {}, {}
    for key_node, value_node in node.value:
        key_line = key_node.start_mark.line + 1
        if not isinstance(key_node, yaml.ScalarNode):
            raise YamlProblem(key_line, "keys must be plain names")
        key = key_node.value
        if key in out:
            raise YamlProblem(key_line, f"the key {key!r} appears twice (first on line {out.key_lines[key]})")
        out[key] = _convert(value_node, depth + 1, budget)
        out.key_lines[key] = key_line
        if isinstance(value_node, yaml.ScalarNode):
            out.raw[key] = value_node.value
    return out


def suggest(word: str, choices) -> str:
    """' (did you mean ...?)' for the closest known name, or ''."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def plain(value: Any) -> Any:
    """LMap/LList to plain dicts and lists."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
