# syntax=docker/dockerfile:1
# Two images from one file; dependencies come only from pyproject.toml, nothing is pinned here.
#   --target web    `kodiak web`, `kodiak migrate`, `kodiak worker --queues gather`:
#                   no torch (the web predicts with ONNX Runtime), a small image
#   --target train  `kodiak worker --queues train`: `.[train]` adds torch==2.14.1,
#                   torchvision==0.29.1, ... whose Linux wheels from PyPI carry the CUDA
#                   libraries; the host gives the driver (NVIDIA Container Toolkit)
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KODIAK_HOME=/data \
    KODIAK_PORT=8000

RUN groupadd --system --gid 1000 kodiak \
    && useradd --system --uid 1000 --gid kodiak --home-dir /data --shell /usr/sbin/nologin kodiak \
    && mkdir -p /data \
    && chown -R kodiak:kodiak /data

WORKDIR /app

COPY . .


FROM base AS train

ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

RUN pip install --no-cache-dir ".[train]"

USER kodiak

HEALTHCHECK NONE

# CUDA does not survive fork: one solo-pool process per GPU.
CMD ["kodiak", "worker", "--queues", "train", "--pool", "solo", "--concurrency", "1"]


# Last, so a plain `docker build .` makes the small web image.
FROM base AS web

RUN pip install --no-cache-dir .

# Inside a container the web listens on every interface; the host decides what to publish.
ENV KODIAK_HOST=0.0.0.0

USER kodiak

EXPOSE 8000

# Asks the container's own address, as a client on the network does (not 127.0.0.1 only).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, socket, sys, urllib.request; url = f'http://{socket.gethostname()}:{os.environ.get(\"KODIAK_PORT\", \"8000\")}/api/v1/health'; sys.exit(0 if b'\"ok\"' in urllib.request.urlopen(url, timeout=4).read() else 1)"]

CMD ["kodiak", "web"]
