"""Edge: the operator console at /console, on when REACTOR_CONSOLE_PASSWORD is set.

views (the pages), auth (login, session cookie, CSRF, wrong-password throttle), reading (query strings
and what a page shows, checked and computed without Flask), templates/ and static/ (served by reactor).
"""
from __future__ import annotations

from flask import Blueprint, Flask

OFF_MESSAGE = ("the console is off: set REACTOR_CONSOLE_PASSWORD (at least 12 characters) where reactor runs "
               "to turn it on at /console; `make run` makes a local one in var/console-password")


def init_console(app: Flask, settings) -> None:
    """Register the console when its password is set; otherwise /console answers 404 saying how to turn it on."""
    if settings.console_password:
        from .auth import configure_sessions
        from .reading import Shared
        from .views import bp

        configure_sessions(app, settings.console_password)
        app.extensions["console_figures"] = Shared()  # the overview's counts, shared by this process's viewers
        app.register_blueprint(bp)
        return
    off = Blueprint("console_off", __name__)

    @off.route("/console", methods=["GET", "POST"])
    @off.route("/console/<path:rest>", methods=["GET", "POST"])
    def console_off(rest: str = ""):
        return OFF_MESSAGE + "\n", 404, {"content-type": "text/plain; charset=utf-8"}

    app.register_blueprint(off)
