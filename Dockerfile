# syntax=docker/dockerfile:1
# One image for every cardshare role (migrate, worker, beat, webhooks, simulator), built from the
# wheel as users install it. The build stage makes the wheel (sdist first, then the wheel from
# it) and the wheels of every dependency at the locked versions (constraints.txt); the runtime
# stage installs only those wheels: no source tree, no editable install, no compiler.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# The observability extras ship in the image, off until their variables are set (README,
# "Observability extras"); `--build-arg CARDSHARE_EXTRAS=` builds without them.
ARG CARDSHARE_EXTRAS=sentry,otel

FROM ${PYTHON_IMAGE} AS build
ARG CARDSHARE_EXTRAS
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_CONSTRAINT=/src/constraints.txt
WORKDIR /src
COPY constraints.txt pyproject.toml setup.py README.md ./
COPY worker ./worker
COPY migrations ./migrations
RUN pip install build \
 && python -m build --outdir /dist . \
 && pip wheel --wheel-dir /wheels /dist/cardshare-*.whl \
 && if [ -n "$CARDSHARE_EXTRAS" ]; then \
      pip wheel --wheel-dir /wheels "$(ls /dist/cardshare-*.whl)[$CARDSHARE_EXTRAS]"; fi

FROM ${PYTHON_IMAGE} AS runtime
ARG CARDSHARE_EXTRAS
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The wheels are mounted for this one step, not copied: they stay out of the image's layers.
# pip compiles the bytecode here, so a read-only root filesystem costs nothing at start.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/cardshare-*.whl \
 && if [ -n "$CARDSHARE_EXTRAS" ]; then \
      pip install --no-index --find-links=/wheels "$(ls /wheels/cardshare-*.whl)[$CARDSHARE_EXTRAS]"; fi \
 && useradd --system --user-group --uid 10001 --no-create-home --shell /usr/sbin/nologin cardshare
# Numeric, so Kubernetes' runAsNonRoot can check it (deploy/kubernetes runs uid 10001 too).
USER 10001:10001
# The only writable place a role needs (a tmpfs or emptyDir under a read-only root filesystem).
WORKDIR /tmp
ENV HOME=/tmp CARDSHARE_DATA_DIR=/tmp/cardshare CARDSHARE_LOG_FORMAT=json
# 8080: the webhook receiver (and its /metrics); 9808: a worker's /metrics.
EXPOSE 8080 9808
ENTRYPOINT ["cardshare"]
CMD ["--help"]
