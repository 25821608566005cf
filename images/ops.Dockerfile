# bgeflow-ops: the light image (no torch). Runs ingest, the PyTorchJob launcher, publish and the
# KFP client operations of the Helm chart's hook Jobs (`bgeflow pipeline upload|trigger|schedule`).
# Build from the repository root: make images  (tag = package version)
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
# Installed with the package too (data-files), for `bgeflow run` outside a checkout.
COPY pipelines/bge_finetune.yaml ./pipelines/
# Versions come from constraints.txt, the same pins the tests run with.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt ".[kfp]" \
    && ! /opt/venv/bin/python -c "import torch" 2>/dev/null

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="bgeflow-ops" \
      org.opencontainers.image.description="bgeflow light image: ingest, launcher, publish, KFP operations (no torch)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/bgeflow/bgeflow" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/venv /opt/venv
# The compiled pipeline the chart's upload hook registers (`bgeflow pipeline upload` default path).
COPY pipelines/bge_finetune.yaml /opt/bgeflow/pipelines/bge_finetune.yaml
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HOME=/tmp
# Numeric, matching the chart's runAsUser, so runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["bgeflow"]
CMD ["--help"]
