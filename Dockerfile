# reactor in a container: the Procfile's web process by default; run the others with
# `python -m reactor worker` and `python -m reactor migrate` (compose.yaml does).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8000

WORKDIR /app
COPY requirements.txt ./
RUN pip install -r requirements.txt
COPY reactor ./reactor
COPY rules ./rules
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin reactor \
    && mkdir -p /app/var && chown reactor /app/var

USER reactor
EXPOSE 8000
STOPSIGNAL SIGTERM
# gunicorn binds 0.0.0.0:$PORT (reactor/gunicorn_conf.py), so a platform's PORT is honoured.
CMD ["gunicorn", "-c", "python:reactor.gunicorn_conf", "reactor:create_app()"]
