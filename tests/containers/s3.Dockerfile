# moto's S3 server for the container tests (tests/containers/conftest.py builds it on first use,
# from the same base as the bgeflow images and the moto version of the test environment).
ARG BASE=python:3.11.13-slim-bookworm
FROM ${BASE}
ARG MOTO_VERSION
RUN python -m venv /opt/moto && /opt/moto/bin/pip install --no-cache-dir "moto[server]==${MOTO_VERSION}"
USER 10001:10001
EXPOSE 5000
ENTRYPOINT ["/opt/moto/bin/moto_server", "--host", "0.0.0.0", "--port", "5000"]
