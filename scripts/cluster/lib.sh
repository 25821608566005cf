# Shared settings for scripts/cluster/*.sh (sourced, not run).
# shellcheck source=scripts/cluster/versions.sh
source "$(dirname "${BASH_SOURCE[0]}")/versions.sh"

# Build outputs (Go build cache, binaries keyed by version): outside the repo, kept across runs.
CACHE=${BGEFLOW_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bgeflow-cluster}
# The running cluster's state: etcd data, certificates, containerd root, logs, kubeconfig.
STATE=${BGEFLOW_CLUSTER_STATE:-/var/lib/bgeflow-cluster}
# Sockets and pid files.
RUN=${BGEFLOW_CLUSTER_RUN:-/run/bgeflow-cluster}

log() { printf '[cluster %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The cluster's network: a namespace of its own, linked to the host by one veth pair.
NETNS=bgeflow
VETH_HOST=bgeflow-host
VETH_NODE=bgeflow-node
HOST_IP=10.233.0.1
NODE_IP=10.233.0.2
NODE_NAME=bgeflow-node
BRIDGE=bgeflow0
POD_CIDR=10.233.64.0/24
SERVICE_CIDR=10.233.128.0/24
SERVICE_IP=10.233.128.1
KUBECONFIG_FILE=$STATE/admin.kubeconfig

# Images the cluster makes itself (scripts/cluster/oci_image.py).
PAUSE_IMAGE=bgeflow.local/pause:1
BUSYBOX_IMAGE=bgeflow.local/busybox:1

# Run a command inside the cluster's network namespace, in this mount namespace (unlike
# `ip netns exec`, which would hide the kubelet's mounts from containerd).
in_ns() { nsenter --net="/run/netns/$NETNS" "$@"; }
MINIO_BUCKET=bgeflow
