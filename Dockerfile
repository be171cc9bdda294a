# syntax=docker/dockerfile:1
# One image for the API, the workers and the migrations: the chart only changes the command.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN python -m venv /opt/venv
# Dependencies first, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir service worker db \
    && /opt/venv/bin/pip install --no-cache-dir . \
    && /opt/venv/bin/pip uninstall --yes flashsale \
    && /opt/venv/bin/pip install --no-cache-dir dumb-init==1.2.5.post1
COPY service ./service
COPY worker ./worker
COPY db ./db
COPY lua ./lua
# Installed in place, so lua/ stays beside the code it belongs to.
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps -e . \
    && /opt/venv/bin/pip check

FROM ${PYTHON_IMAGE}
ARG REVISION=unknown
LABEL org.opencontainers.image.source="https://github.com/flashsale/flashsale" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=root:root /app /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /app
USER 10001:10001
EXPOSE 8000
# dumb-init is PID 1: it forwards SIGTERM to the API or worker (graceful and warm shutdown)
# and reaps RQ's scheduler child. No HEALTHCHECK: Kubernetes probes do that job.
ENTRYPOINT ["dumb-init", "--"]
CMD ["flashsale", "api"]
