# syntax=docker/dockerfile:1
# One image for every Kodiak process: `kodiak web`, `kodiak worker --queues gather|train`,
# `kodiak migrate`. Dependencies (torch==2.14.1, torchvision==0.29.1, ...) come only from
# pyproject.toml; nothing is pinned here.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KODIAK_HOME=/data \
    KODIAK_PORT=8000

RUN groupadd --system --gid 1000 kodiak \
    && useradd --system --uid 1000 --gid kodiak --home-dir /data --shell /usr/sbin/nologin kodiak \
    && mkdir -p /data/storage \
    && chown -R kodiak:kodiak /data

WORKDIR /app

COPY . .
RUN pip install --no-cache-dir .

USER kodiak

EXPOSE 8000

# Meaningful for `kodiak web`; worker and migrate services override or disable it in compose.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('KODIAK_PORT', '8000'); body = urllib.request.urlopen(f'http://127.0.0.1:{port}/api/v1/health', timeout=4).read(); sys.exit(0 if b'\"ok\"' in body else 1)"]

CMD ["kodiak", "web"]
