# bgeflow-gpu: CUDA torch, faiss-gpu and FlagEmbedding. Runs mine, the training pods
# (`bgeflow train` under torchrun) and evaluate. Needs the NVIDIA driver on the node only:
# the CUDA runtime ships inside the torch/faiss wheels.
# Build from the repository root: make images  (tag = package version)
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml constraints.txt README.md ./
COPY images/gpu-constraints.txt ./
COPY src ./src
# Installed with the package too (data-files), for `bgeflow run` outside a checkout.
COPY pipelines/bge_finetune.yaml ./pipelines/
# Every version from constraints.txt (+ the faiss-gpu pin); then faiss-gpu replaces faiss-cpu,
# which the train extra names for CPU machines.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt -c gpu-constraints.txt ".[train,kfp]" \
    && /opt/venv/bin/pip uninstall -y faiss-cpu \
    && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt -c gpu-constraints.txt faiss-gpu \
    && /opt/venv/bin/python -c "import faiss, torch; assert hasattr(faiss, 'StandardGpuResources'), 'faiss without GPU support'; print(torch.__version__, torch.version.cuda)"

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="bgeflow-gpu" \
      org.opencontainers.image.description="bgeflow GPU image: mine, train (torchrun), evaluate" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/bgeflow/bgeflow" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HOME=/tmp HF_HOME=/cache/huggingface \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["bgeflow"]
CMD ["--help"]
