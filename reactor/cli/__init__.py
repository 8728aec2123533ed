"""Edge: the `reactor` command (also `python -m reactor`). Run `reactor --help` for the list.

Each command is registered once, with its arguments, by @command (registry.py); settings come through
Settings, each command asking only for the part it needs. One convention for all: the rules are
`--rules PATH` (`check PATH` stays as a shorthand), an event is a built-in sample name or a JSON file,
changed by `--topic`, `--meeting-id`, `--host-id` and `--at` (events.py); a wrong argument prints the
command's own usage.
"""
from . import send, rules, store, dev  # noqa: F401, I001  (each registers its commands, in --help order)
from .registry import main, run

__all__ = ["main", "run"]
