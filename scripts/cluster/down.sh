#!/usr/bin/env bash
# Stop the local cluster started by up.sh: every process it recorded (by pid), every container
# of its containerd, the kubelet's mounts and the network namespace.
#
#   scripts/cluster/down.sh           # keeps etcd data, certificates, images and MinIO's data
#   scripts/cluster/down.sh --purge   # and deletes them too (the build cache stays)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/cluster/lib.sh
source "$here/lib.sh"
[[ $(id -u) == 0 ]] || die "run as root"
purge=false
[[ ${1:-} == --purge ]] && purge=true

stop() { # name: SIGTERM the recorded pid, SIGKILL after 20s
  local name=$1 pid
  [[ -f $RUN/$name.pid ]] || return 0
  pid=$(cat "$RUN/$name.pid")
  if kill -0 "$pid" 2>/dev/null; then
    log "$name: stopping (pid $pid)"
    kill "$pid"
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$RUN/$name.pid"
}

# Controllers first, the API server and etcd last, so nothing logs errors about the others.
for name in trainer jobset training-operator minio coredns kube-proxy kubelet; do stop "$name"; done
pod_netns=()
if [[ -S $RUN/containerd.sock ]] && [[ -f $RUN/containerd.pid ]]; then
  ctr_() { ctr -a "$RUN/containerd.sock" -n k8s.io "$@"; }
  # The pods' network namespaces (/run/netns/cni-*) this containerd made: removed below.
  for c in $(ctr_ containers ls -q 2>/dev/null); do
    path=$(ctr_ containers info "$c" 2>/dev/null | grep -o '"/var/run/netns/cni-[^"]*"' | tr -d '"' | head -1 || true)
    [[ -n $path ]] && pod_netns+=("$(basename "$path")")
  done
  for task in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$task" 2>/dev/null || true; done
  sleep 2
  for task in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$task" >/dev/null 2>&1 || true; done
  for c in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$c" >/dev/null 2>&1 || true; done
fi
for name in containerd kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$name"; done

# The kubelet's volume mounts (tmpfs emptyDirs, tokens), pod netns bind mounts, then its root.
if [[ -d $STATE/kubelet ]]; then
  findmnt -rno TARGET | grep "^$STATE/kubelet/" | sort -r | while read -r m; do umount -l "$m" || true; done
  mountpoint -q "$STATE/kubelet" && umount -l "$STATE/kubelet"
fi
findmnt -rno TARGET | grep -E "^$RUN/|^/run/netns/cni-" | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
for n in $(printf '%s\n' "${pod_netns[@]}" | sort -u); do ip netns delete "$n" 2>/dev/null || true; done
if ip netns list | grep -qw "$NETNS"; then
  log "deleting network namespace $NETNS"
  ip netns delete "$NETNS"
fi
ip link show "$VETH_HOST" >/dev/null 2>&1 && ip link delete "$VETH_HOST"
if $purge; then
  log "deleting $STATE and $RUN"
  rm -rf "$STATE" "$RUN"
fi
log "cluster stopped"
