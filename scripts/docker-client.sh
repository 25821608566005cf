#!/usr/bin/env bash
# Print the docker CLI that can build the images: they need BuildKit (each Dockerfile has its
# own .dockerignore, which the legacy builder ignores, sending the whole checkout as context).
# CLIs from 23 on build with BuildKit only through the buildx plugin; older CLIs (Debian 12's
# docker.io is 20.10) have BuildKit built in. So: the first `docker` on PATH with buildx, else
# the first CLI older than 23, else plain `docker` (whose build then explains what is missing).
set -uo pipefail

candidates=()
while IFS= read -r path; do
    candidates+=("$path")
done < <(type -ap docker; [[ -x /usr/bin/docker ]] && echo /usr/bin/docker)

for cli in "${candidates[@]}"; do
    if "$cli" buildx version >/dev/null 2>&1; then
        echo "$cli"
        exit 0
    fi
done
for cli in "${candidates[@]}"; do
    version="$("$cli" version --format '{{.Client.Version}}' 2>/dev/null || true)"
    if [[ "$version" =~ ^([0-9]+)\. ]] && (( BASH_REMATCH[1] < 23 )); then
        echo "$cli"
        exit 0
    fi
done
echo docker
