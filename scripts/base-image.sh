#!/usr/bin/env bash
# Make the local Python base image the Dockerfiles' PYTHON_IMAGE build argument can point at,
# from Debian's packages only (no registry pull): debootstrap --variant=minbase bookworm with
# python3 and venv, imported with `docker import`. Prints the tag on stdout.
#
#   bash scripts/base-image.sh [--ca-bundle FILE] [--tag TAG]
#
# --ca-bundle (default: $BGEFLOW_CA_BUNDLE, else $PIP_CERT): a PEM bundle for machines whose TLS
# goes through their own CA. It is added to the base image's trust store and named as pip's
# `cert`, so the pip inside `docker build` trusts what the host's pip trusts. It exists only in
# this local base image: the published Dockerfiles' default base knows nothing of it.
#
# Idempotent: the image carries a label with the hash of its recipe (this script, the CA bundle,
# the suite and the package list); an image with the same tag and recipe is reused as it is.
set -euo pipefail

SUITE="${DEBIAN_SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
TAG="localhost/bgeflow-python:3.11-${SUITE}"
CA_BUNDLE="${BGEFLOW_CA_BUNDLE-${PIP_CERT:-}}"
# python-is-python3: the Dockerfiles run `python -m venv`, as the official python images allow.
PACKAGES="python3,python3-venv,python-is-python3,ca-certificates"
DOCKER="${DOCKER:-docker}"

while (($#)); do
    case "$1" in
        --ca-bundle) CA_BUNDLE="$2"; shift 2 ;;
        --tag) TAG="$2"; shift 2 ;;
        *) echo "usage: $0 [--ca-bundle FILE] [--tag TAG]" >&2; exit 2 ;;
    esac
done
if [[ -n "$CA_BUNDLE" && ! -s "$CA_BUNDLE" ]]; then
    echo "base-image: CA bundle $CA_BUNDLE is missing or empty" >&2
    exit 1
fi

recipe="$( { cat "$0"; echo "$SUITE $PACKAGES"; [[ -n "$CA_BUNDLE" ]] && cat "$CA_BUNDLE"; } | sha256sum | cut -c1-16)"
current="$("$DOCKER" image inspect --format '{{ index .Config.Labels "dev.bgeflow.base.recipe" }}' "$TAG" 2>/dev/null || true)"
if [[ "$current" == "$recipe" ]]; then
    echo "base-image: $TAG is up to date (recipe $recipe)" >&2
    echo "$TAG"
    exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "base-image: debootstrap is missing (apt-get install debootstrap)" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null 2>&1 || {
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
fi

ROOTFS="$(mktemp -d /var/tmp/bgeflow-rootfs.XXXXXX)"
trap 'rm -rf "$ROOTFS"' EXIT
started=$SECONDS
echo "base-image: debootstrap $SUITE ($PACKAGES) from $MIRROR" >&2
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 || {
    tail -n 30 "$ROOTFS.log" >&2; rm -f "$ROOTFS.log"; exit 1; }
rm -f "$ROOTFS.log"

if [[ -n "$CA_BUNDLE" ]]; then
    install -m 0644 "$CA_BUNDLE" "$ROOTFS/usr/local/share/ca-certificates/bgeflow-build-ca.crt"
    chroot "$ROOTFS" update-ca-certificates >/dev/null 2>&1
    # The pip that `python -m venv` brings (Debian's 23.x) trusts certifi's list, not the system's.
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$ROOTFS/etc/pip.conf"
fi
# What an image does not need at run time: package lists and caches, docs, man pages.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb \
       "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* \
       "$ROOTFS"/var/log/*.log "$ROOTFS"/var/log/apt/* "$ROOTFS"/tmp/*

tar --numeric-owner -C "$ROOTFS" -c . | "$DOCKER" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "LABEL dev.bgeflow.base.recipe=$recipe dev.bgeflow.base.suite=$SUITE" \
    --change 'CMD ["python3"]' \
    - "$TAG" >/dev/null
echo "base-image: built $TAG in $((SECONDS - started)) s (recipe $recipe)" >&2
echo "$TAG"
