# One image for every cardshare role (migrate, worker, beat, webhooks, simulator).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY worker ./worker
COPY migrations ./migrations
RUN pip install --no-compile -e . && useradd --system --uid 10001 cardshare
USER cardshare
ENV CARDSHARE_DATA_DIR=/tmp/cardshare CARDSHARE_LOG_FORMAT=json
# 8080: the webhook receiver (and its /metrics); 9808: a worker's /metrics.
EXPOSE 8080 9808
ENTRYPOINT ["cardshare"]
CMD ["--help"]
