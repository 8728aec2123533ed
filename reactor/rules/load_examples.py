"""Pure (but for reading event files): a rule's `examples:`, the unit tests `check` runs."""
from __future__ import annotations

import json
from pathlib import Path

from ..samples import sample, sample_names, set_field
from .model import Example
from .source import LList, LMap, plain, suggest

EXAMPLE_KEYS = ("event", "with", "expect")


class ExampleParser:
    """Mixed into the rule parser: needs self.problem(line, message) and self.file."""

    def parse_examples(self, item: LMap) -> tuple:
        node = item.get("examples")
        if node is None:
            return ()
        if not isinstance(node, LList):
            self.problem(item.line_of("examples"), "'examples' is a list of {event: ..., expect: match | no match}")
            return ()
        examples = []
        for index, ex in enumerate(node):
            line = node.line_of(index)
            if not isinstance(ex, LMap):
                self.problem(line, "an example is a mapping {event: ..., expect: match | no match}")
                continue
            for key in ex:
                if key not in EXAMPLE_KEYS:
                    self.problem(ex.line_of(key), f"example: unknown key {key!r}{suggest(key, EXAMPLE_KEYS)}")
            expect = ex.get("expect")
            if expect not in ("match", "no match"):
                self.problem(ex.line_of("expect"), "example: 'expect' must be 'match' or 'no match'")
                continue
            body = self.example_body(ex, line)
            if body is not None:
                examples.append(Example(body, expect == "match", line))
        return tuple(examples)

    def example_body(self, ex: LMap, line: int) -> dict | None:
        source = ex.get("event")
        if isinstance(source, LMap):
            body = plain(source)
        elif isinstance(source, str) and source.endswith(".json"):
            file = Path(self.file).parent / source
            try:
                body = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                self.problem(ex.line_of("event"), f"example: cannot read {file}: {exc}")
                return None
        elif isinstance(source, str):
            try:
                body = sample(source)
            except KeyError:
                self.problem(ex.line_of("event"), f"example: no built-in sample {source!r}{suggest(source, sample_names())}")
                return None
        else:
            self.problem(line, "example: 'event' is a sample name, a .json file or an event mapping")
            return None
        overrides = ex.get("with") or {}
        if not isinstance(overrides, LMap) and overrides != {}:
            self.problem(ex.line_of("with"), "example: 'with' maps field paths to values")
            return None
        for path, value in overrides.items():
            set_field(body, path, plain(value))
        return body


