"""Built-in Zoom event samples (Zoom's shapes), for `send`, rule examples and tests."""
from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path

HERE = Path(__file__).parent


def sample_names() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.json"))


@lru_cache(maxsize=None)
def _load(name: str) -> dict:
    return json.loads((HERE / f"{name}.json").read_text())


def sample(name: str) -> dict:
    """A fresh copy of the named sample; KeyError (listing the names) when there is none."""
    if name not in sample_names():
        raise KeyError(f"no built-in sample {name!r}: choose one of {', '.join(sample_names())}")
    return copy.deepcopy(_load(name))


def set_field(body: dict, path: str, value) -> None:
    """Set a field path (as rules read it: into payload.object unless it starts at the root)."""
    from ..events import ENVELOPE_FIELDS

    parts = path.split(".")
    node = body if parts[0] in ENVELOPE_FIELDS else body.setdefault("payload", {}).setdefault("object", {})
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
