#!/usr/bin/env bash
# Make a Docker Engine answer on this machine: install Debian's docker.io when dockerd is
# missing (root only), start dockerd in the background when nothing answers, wait for it.
# Idempotent: an engine that already answers (another user's, a systemd one) is left alone and
# never stopped. Exit 0 when `docker info` works at the end, 1 when no engine can be had here
# (no root to install it, no permission to start it): callers then skip the container tests.
set -euo pipefail

LOG="${DOCKERD_LOG:-/tmp/bgeflow-dockerd.log}"

engine_up() { docker info >/dev/null 2>&1 || /usr/bin/docker info >/dev/null 2>&1; }

if engine_up; then
    exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        echo "docker-engine: no dockerd here and no root apt-get to install docker.io" >&2
        exit 1
    fi
    echo "docker-engine: installing docker.io (Debian's Docker Engine)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq docker.io >/dev/null
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "docker-engine: dockerd is installed but not running, and starting it needs root" >&2
    exit 1
fi
echo "docker-engine: starting dockerd (log: $LOG)" >&2
# setsid: the daemon outlives this script and the make/CI process group that ran it.
setsid dockerd >"$LOG" 2>&1 < /dev/null &
for _ in $(seq 1 60); do
    if engine_up; then
        exit 0
    fi
    sleep 1
done
echo "docker-engine: dockerd did not answer within 60 s; last lines of $LOG:" >&2
tail -n 20 "$LOG" >&2 || true
exit 1
