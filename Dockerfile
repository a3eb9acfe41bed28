# Production image: the API and the worker run from the same image (different commands).
# Build hosts need Debian's build tools, so the image is Debian 12 with them installed.
FROM debian:bookworm-slim

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    CLUSTERFORGE_DATA=/var/lib/clusterforge \
    CLUSTERFORGE_PATCHES_DIR=/opt/clusterforge/patches \
    PATH=/opt/clusterforge/.venv/bin:$PATH

RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential dpkg-dev debhelper fakeroot quilt patch gnupg po-debconf \
      python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/clusterforge
COPY pyproject.toml constraints.txt README.md alembic.ini ./
COPY app ./app
COPY workers ./workers
COPY migrations ./migrations
COPY patches ./patches
COPY openapi ./openapi
RUN python3 -m venv .venv && .venv/bin/pip install --no-cache-dir -c constraints.txt .

VOLUME ["/var/lib/clusterforge"]
EXPOSE 8000
# API:     docker run IMAGE            (runs migrations, then uvicorn)
# Worker:  docker run IMAGE arq workers.settings.WorkerSettings
CMD ["sh", "-c", "alembic upgrade head && exec uvicorn app.main:app --host 0.0.0.0 --port 8000 --proxy-headers"]
