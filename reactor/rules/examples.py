"""Pure: run the examples written in rule files (what `check` reports)."""
from __future__ import annotations

import json

from ..events import event_from_body
from .match import RuleSet


def run_examples(rules: RuleSet) -> tuple[int, list[str]]:
    """Run every rule's examples; return how many ran and, for each that failed, a problem line
    `file:line: rule "name": example expected match, got no match: why`."""
    ran, problems = 0, []
    for rule in rules.rules:
        for example in rule.examples:
            ran += 1
            event = event_from_body(example.event, json.dumps(example.event).encode())
            failure = rule.failure(event)
            if (failure is None) != example.expect:
                file, _ = rule.source.rsplit(":", 1)
                why = f": {failure}" if failure else ""
                problems.append(f"{file}:{example.line}: rule \"{rule.name}\": example expected "
                                f"{'match' if example.expect else 'no match'}, got "
                                f"{'match' if failure is None else 'no match'}{why}")
    return ran, problems
