"""The stack's ceiling: a bare Flask endpoint answering 204, served by the same gunicorn settings."""
from flask import Flask, request


def create_app():
    app = Flask(__name__)

    @app.post("/webhooks/zoom")
    def webhook():
        request.get_data()
        return "", 204

    @app.get("/readyz")
    def ready():
        return "ok"

    return app
