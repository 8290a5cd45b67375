# syntax=docker/dockerfile:1
# Build stage: dependencies first (cached until pyproject.toml changes), then the source.
# With the s3 extra: API and workers on separate hosts share models and jobs through PREDICTQ_STORE_URL.
FROM python:3.12-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
RUN mkdir api worker shared predictq \
 && touch api/__init__.py worker/__init__.py shared/__init__.py predictq/__init__.py \
 && pip install '.[s3]' \
 && pip uninstall -y predictq
COPY api api
COPY worker worker
COPY shared shared
COPY predictq predictq
RUN pip install --no-deps .

# Runtime stage: the virtualenv and the demo data, run as an unprivileged user.
FROM python:3.12-slim
RUN useradd --create-home --uid 10001 predictq \
 && mkdir -p /var/lib/predictq \
 && chown predictq /var/lib/predictq
COPY --from=build /opt/venv /opt/venv
COPY data /app/data
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PREDICTQ_DATA_DIR=/var/lib/predictq \
    PREDICTQ_DATASET_PATH=/app/data/penguins.csv \
    PREDICTQ_HOST=0.0.0.0
USER predictq
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["predictq", "serve"]
