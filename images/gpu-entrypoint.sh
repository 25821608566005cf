#!/bin/sh
# The gpu image's ENTRYPOINT: the bgeflow CLI, so `docker run <image> train ...` runs `bgeflow train ...`.
# A shell as the first argument runs as given instead: the Kubeflow SDK's container backend (bgeflow's
# `container` training backend) starts each node as `bash -lc <script>` through the Docker API, which
# leaves the image's ENTRYPOINT in front of its command. (On Kubernetes a pod's command replaces the
# ENTRYPOINT, so pods never run this script.)
case "$1" in
  bash | sh | /bin/bash | /bin/sh) exec "$@" ;;
esac
exec bgeflow "$@"
