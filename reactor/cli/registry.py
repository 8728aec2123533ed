"""The command registry: each command registered once, with its arguments, by @command, and the
entry point that parses a command line and runs one with the Settings it may need."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from ..errors import ReactorError
from ..settings import Settings

COMMANDS: dict[str, tuple[str, tuple, Callable]] = {}


def arg(*flags: str, **options) -> tuple:
    """One argparse argument of a command: arg("--topic", help=...)."""
    return flags, options


def command(name: str, help: str, *arguments: tuple):
    """Register `fn(args, settings) -> exit code` as the command `name`, with its arguments."""

    def register(fn: Callable) -> Callable:
        COMMANDS[name] = (help, arguments, fn)
        return fn

    return register


def main(argv: list[str] | None = None, prog: str = "reactor") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Zoom webhooks in, live-stream actions out.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parsers = {}
    for name, (help_text, arguments, _) in COMMANDS.items():
        p = parsers[name] = sub.add_parser(name, help=help_text, description=help_text)
        for flags, options in arguments:
            p.add_argument(*flags, **options)
        p.set_defaults(usage_error=p.error)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse would blame the top level; the command's own usage is what helps
        parsers[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        settings = Settings.from_env(webhooks=False, zoom=False)  # what a tool may need; each reads its part
    except ReactorError as exc:
        print(f"reactor: {exc}", file=sys.stderr)
        return 2
    return COMMANDS[args.command][2](args, settings)


def run(prog: str = "reactor") -> None:
    """The `reactor` console script (and `python -m reactor`)."""
    try:
        sys.exit(main(prog=prog))
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)


