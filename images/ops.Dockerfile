# bgeflow-ops: the light image (no torch). Runs ingest, the PyTorchJob launcher, publish and the
# KFP client operations of the Helm chart's hook Jobs (`bgeflow pipeline upload|trigger|schedule`).
# Build from the repository root: make images  (tag = package version; needs BuildKit)
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# The dependencies, installed for a placeholder package: this stage is rebuilt when the
# requirements change, not on every source edit. Versions come from constraints.txt, the same
# pins the tests run with.
FROM ${PYTHON_IMAGE} AS deps
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# README.md (the package's readme) is a placeholder too: a docs edit must not rebuild this stage.
COPY pyproject.toml constraints.txt ./
RUN mkdir -p src/bgeflow pipelines && touch src/bgeflow/__init__.py pipelines/bge_finetune.yaml README.md \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt ".[kfp]" \
    && /opt/venv/bin/pip uninstall -y bgeflow

# bgeflow itself, as a wheel.
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY src ./src
# Installed with the package too (data-files), for `bgeflow run` outside a checkout.
COPY pipelines/bge_finetune.yaml ./pipelines/
RUN python -m venv /tmp/build && /tmp/build/bin/pip wheel --no-cache-dir --no-deps -w /dist .

# The image is the deps stage itself, not a COPY of its venv (which would store the venv twice).
FROM deps
RUN --mount=type=bind,from=wheel,source=/dist,target=/tmp/dist \
    /opt/venv/bin/pip install --no-cache-dir --no-deps /tmp/dist/bgeflow-*.whl \
    && rm -rf /src \
    && ! /opt/venv/bin/python -c "import torch" 2>/dev/null
# The compiled pipeline the chart's upload hook registers (`bgeflow pipeline upload` default path).
COPY pipelines/bge_finetune.yaml /opt/bgeflow/pipelines/bge_finetune.yaml
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HOME=/tmp
# Labels last: the revision changes with every commit and would otherwise invalidate the layers above.
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="bgeflow-ops" \
      org.opencontainers.image.description="bgeflow light image: ingest, launcher, publish, KFP operations (no torch)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/bgeflow/bgeflow" \
      org.opencontainers.image.licenses="Apache-2.0"
# Numeric, matching the chart's runAsUser, so runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["bgeflow"]
CMD ["--help"]
