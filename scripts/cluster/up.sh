#!/usr/bin/env bash
# Build (if needed) and start a one-node Kubernetes cluster on this machine, the way
# hack/local-up-cluster.sh runs one: every component a process, no images pulled.
#
#   sudo scripts/cluster/up.sh            # idempotent: starts what is not running, keeps what is
#   sudo scripts/cluster/up.sh addons     # only some steps (packages build netns pki control_plane
#                                         # rbac node dns addons, or one add-on like minio_up)
#   export KUBECONFIG=/var/lib/bgeflow-cluster/admin.kubeconfig
#
# What runs (see scripts/cluster/README.md):
#   etcd (Debian) · kube-apiserver (RBAC, PodSecurity) · kube-controller-manager · kube-scheduler
#   (k8s.io/kubernetes module) · containerd + runc + CNI bridge (Debian) · kubelet · kube-proxy ·
#   CoreDNS · Kubeflow Training Operator 1.9 · JobSet + Kubeflow Trainer v2 · MinIO.
#
# Network isolation: everything runs inside the network namespace "bgeflow" (made here). Its only
# link is a veth pair to the host (host 10.233.0.1 <-> node 10.233.0.2); it has no default route,
# so no pod and no component can send a packet anywhere but this machine. Pods get
# 10.233.64.0/24 on a bridge inside the namespace; Services 10.233.128.0/24.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=scripts/cluster/lib.sh
source "$here/lib.sh"
[[ $(id -u) == 0 ]] || die "run as root (it starts a kubelet, containerd and a network namespace)"

started_at=$SECONDS
KUBE_BIN="$CACHE/bin/kubernetes-$KUBERNETES_VERSION"

# 1. Packages and binaries ------------------------------------------------------------------------
ensure_packages() {
  local missing=()
  for pair in etcd:etcd-server containerd:containerd runc:runc /usr/lib/cni/bridge:containernetworking-plugins \
      iptables:iptables conntrack:conntrack openssl:openssl nsenter:util-linux /bin/busybox:busybox-static; do
    local probe=${pair%%:*} pkg=${pair#*:}
    if [[ $probe == /* ]]; then [[ -e $probe ]] || missing+=("$pkg"); else command -v "$probe" >/dev/null || missing+=("$pkg"); fi
  done
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }
  fi
}
mkdir -p "$STATE"/{pki,logs,etcd,kubelet,containerd,cni/net.d,manifests,images} "$RUN"

# 2. The network namespace ------------------------------------------------------------------------
netns_up() {
  if ! ip netns list | grep -qw "$NETNS"; then
    log "creating network namespace $NETNS ($HOST_IP <-> $NODE_IP)"
    ip netns add "$NETNS"
  fi
  if ! ip link show "$VETH_HOST" >/dev/null 2>&1; then
    ip link add "$VETH_HOST" type veth peer name "$VETH_NODE"
    ip link set "$VETH_NODE" netns "$NETNS"
    ip addr add "$HOST_IP/30" dev "$VETH_HOST"
    ip link set "$VETH_HOST" up
    in_ns ip addr add "$NODE_IP/30" dev "$VETH_NODE"
    in_ns ip link set "$VETH_NODE" up
  fi
  in_ns ip link set lo up
  # Pods reach Services (kube-proxy DNAT) and each other through the bridge: forwarding and
  # bridge netfilter inside the namespace only (both sysctls are per network namespace).
  in_ns sysctl -qw net.ipv4.ip_forward=1
  in_ns sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
  # Belt and braces: the namespace has no default route, and nothing from a pod may leave through
  # the veth either (the host is reached at the node address, which is local to the namespace).
  in_ns iptables -C FORWARD -s "$POD_CIDR" -o "$VETH_NODE" -j DROP 2>/dev/null \
    || in_ns iptables -I FORWARD -s "$POD_CIDR" -o "$VETH_NODE" -j DROP
  # A Service address that kube-proxy did not translate must not be routed anywhere.
  in_ns ip route replace blackhole "$SERVICE_CIDR"
}

# 3. Certificates (openssl; one CA signs everything, as local-up-cluster does) ---------------------
pki=$STATE/pki
cert() { # name CN O [SANs]: a client (or, with SANs, serving) certificate signed by the CA
  local name=$1 cn=$2 org=$3 sans=${4:-}
  [[ -f $pki/$name.crt ]] && return
  openssl genrsa -out "$pki/$name.key" 2048 2>/dev/null
  local subj="/CN=$cn" ext=$pki/$name.ext
  [[ -n $org ]] && subj="/O=$org$subj"
  openssl req -new -key "$pki/$name.key" -subj "$subj" -out "$pki/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n $sans ]]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$sans"
    else echo "extendedKeyUsage=clientAuth"; fi
  } >"$ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$ext"
}
kubeconfig() { # name user: a kubeconfig with the user's client certificate
  local name=$1 file=$STATE/$1.kubeconfig
  [[ -f $file ]] && return
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: bgeflow
  cluster:
    server: https://$NODE_IP:6443
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: $name
  user:
    client-certificate-data: $(base64 -w0 "$pki/$name.crt")
    client-key-data: $(base64 -w0 "$pki/$name.key")
contexts:
- name: bgeflow
  context: {cluster: bgeflow, user: $name}
current-context: bgeflow
EOF
  chmod 600 "$file"
}
pki_up() {
  if [[ ! -f $pki/ca.crt ]]; then
    log "generating the cluster CA and certificates in $pki"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$pki/ca.key" -out "$pki/ca.crt" -days 3650 \
      -subj "/CN=bgeflow-cluster-ca" 2>/dev/null
    openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  fi
  cert apiserver kube-apiserver "" \
    "IP:$NODE_IP,IP:$SERVICE_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  cert admin kubernetes-admin system:masters
  cert controller-manager system:kube-controller-manager ""
  cert scheduler system:kube-scheduler ""
  cert kubelet "system:node:$NODE_NAME" system:nodes "IP:$NODE_IP,DNS:$NODE_NAME"
  cert kube-proxy system:kube-proxy ""
  # CoreDNS authenticates as itself; its RBAC is applied below. (The Kubeflow and JobSet
  # controllers run as pods with their releases' ServiceAccounts.)
  cert coredns bgeflow:coredns ""
  for k in admin controller-manager scheduler kubelet kube-proxy coredns; do kubeconfig "$k"; done
}

# 4. Processes ------------------------------------------------------------------------------------
# Each component: a process in the namespace, its log in $STATE/logs, its pid in $RUN.
running() { [[ -f $RUN/$1.pid ]] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }
# What a component was started with: its command line and the content of the files it names
# (configs, certificates). A change restarts it, so editing this script and re-running applies.
fingerprint() {
  local arg
  { printf '%s\n' "$@"; env | grep -E '^(MY_POD_NAMESPACE|KUBECONFIG|MINIO_[A-Z_]+)=' | sort || true
    for arg in "$@"; do
      arg=${arg#*=}
      if [[ -f $arg && $arg == "$STATE"/* ]]; then cat "$arg"; fi
    done
  } | sha256sum | cut -c1-16
}
stop_component() {
  local name=$1 pid
  pid=$(cat "$RUN/$name.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  rm -f "$RUN/$name.pid"
}
start() { # name command...: start unless running with the same command and files
  local name=$1; shift
  local print
  print=$(fingerprint "$@")
  if running "$name"; then
    if [[ $(cat "$RUN/$name.fingerprint" 2>/dev/null) == "$print" ]]; then
      log "$name: running (pid $(cat "$RUN/$name.pid"))"
      return
    fi
    log "$name: its command or configuration changed; restarting"
    stop_component "$name"
  fi
  log "$name: starting"
  # setsid: its own session, so a Ctrl-C in this terminal does not reach it.
  setsid nsenter --net="/run/netns/$NETNS" "$@" >>"$STATE/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
  echo "$print" >"$RUN/$name.fingerprint"
}
# Write stdin to a file only when it differs: kube-proxy exits when its configuration file is
# written, and an unchanged fingerprint keeps a running component running.
write_file() {
  local tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; fi
}
wait_for() { # what seconds command...: poll until the command succeeds
  local what=$1 seconds=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "$what not ready after ${seconds}s (logs: $STATE/logs)"
    sleep 1
  done
  log "$what: ready"
}
kc() { "$KUBECTL" --kubeconfig "$STATE/admin.kubeconfig" "$@"; }
KUBECTL=${KUBECTL:-$(command -v kubectl || echo "$repo/.tools/bin/kubectl")}
[[ -x $KUBECTL ]] || die "no kubectl: run 'make tools' (or put kubectl on PATH)"

control_plane_up() {
  start etcd etcd --name bgeflow --data-dir "$STATE/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster bgeflow=http://127.0.0.1:2380 --quota-backend-bytes 2147483648
  wait_for etcd 60 in_ns curl -sf http://127.0.0.1:2379/health

  # PodSecurity is on by default; named here so the intent is explicit. Namespaces opt in to
  # "restricted" with the pod-security.kubernetes.io/enforce label. Aggregator routing: the
  # API server reaches webhook Services through their Endpoints, not through kube-proxy.
  start kube-apiserver "$KUBE_BIN/kube-apiserver" \
    --etcd-servers=http://127.0.0.1:2379 \
    --bind-address="$NODE_IP" --secure-port=6443 --advertise-address="$NODE_IP" \
    --service-cluster-ip-range="$SERVICE_CIDR" --service-node-port-range=30000-32767 \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction,PodSecurity \
    --allow-privileged=true \
    --client-ca-file="$pki/ca.crt" --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
    --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --api-audiences=https://kubernetes.default.svc.cluster.local \
    --enable-aggregator-routing=true \
    --kubelet-preferred-address-types=InternalIP \
    --profiling=false --v=1
  wait_for kube-apiserver 120 kc get --raw /readyz

  start kube-controller-manager "$KUBE_BIN/kube-controller-manager" \
    --kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
    --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" --profiling=false --v=1
  start kube-scheduler "$KUBE_BIN/kube-scheduler" \
    --kubeconfig="$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false --v=1
  wait_for "service account token controller" 120 kc -n default get serviceaccount default
}

node_images() {
  # The sandbox ("pause") image and a busybox image (smoke pods, the operator's init container),
  # made from Debian's static busybox: nothing to pull.
  local images=$STATE/images
  if [[ ! -f $images/busybox.tar ]]; then
    python3 "$here/oci_image.py" --ref "$BUSYBOX_IMAGE" --out "$images/busybox.tar" \
      --file /bin/busybox=/bin/busybox --link /bin/sh=busybox --link /bin/nslookup=busybox \
      --link /bin/sleep=busybox --link /bin/wget=busybox --link /bin/cat=busybox --link /bin/echo=busybox \
      --link /bin/seq=busybox --link /bin/id=busybox --dir /tmp --entrypoint /bin/sh >/dev/null
  fi
  if [[ ! -f $images/pause.tar ]]; then
    # PID 1 of the sandbox only holds the namespaces; containerd stops it with SIGKILL.
    python3 "$here/oci_image.py" --ref "$PAUSE_IMAGE" --out "$images/pause.tar" \
      --file /bin/busybox=/bin/busybox --entrypoint /bin/busybox sleep 2147483647 --user 65535:65535 >/dev/null
  fi
  for tar in pause busybox; do
    ctr_ images import --all-platforms "$images/$tar.tar" >/dev/null
  done
}
ctr_() { ctr -a "$RUN/containerd.sock" -n k8s.io "$@"; }

node_up() {
  containerd_up
  kubelet_up
}

containerd_up() {
  # containerd: its own root, state and socket, so Docker's containerd is never touched.
  write_file "$STATE/containerd.toml" <<EOF
version = 2
root = "$STATE/containerd"
state = "$RUN/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$RUN/containerd.sock"
[ttrpc]
  address = "$RUN/containerd.sock.ttrpc"
[debug]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd-opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  enable_selinux = false
  # This machine's root lacks CAP_SYS_RESOURCE, so no process may lower its oom_score_adj:
  # runc failed every sandbox ("nsexec: failed to update /proc/self/oom_score_adj: Permission
  # denied") for the kubelet's -998. Clamp to containerd's own score instead (as rootless does).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
EOF
  write_file "$STATE/cni/net.d/10-bgeflow.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "bgeflow",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}],
              "dataDir": "$STATE/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  start containerd containerd --config "$STATE/containerd.toml"
  wait_for containerd 60 ctr -a "$RUN/containerd.sock" version
  node_images
}

kubelet_up() {
  # The kubelet's root must be a shared mount: volumes it mounts (tmpfs emptyDirs, projected
  # tokens) have to show up in the containers containerd starts.
  if ! findmnt -no PROPAGATION "$STATE/kubelet" 2>/dev/null | grep -q shared; then
    mountpoint -q "$STATE/kubelet" || mount --bind "$STATE/kubelet" "$STATE/kubelet"
    mount --make-rshared "$STATE/kubelet"
  fi
  # Pods resolve through CoreDNS (kubelet's clusterDNS); this file only feeds the search path.
  printf 'nameserver %s\n' "$NODE_IP" >"$STATE/resolv.conf"
  write_file "$STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $pki/kubelet.crt
tlsPrivateKeyFile: $pki/kubelet.key
containerRuntimeEndpoint: unix://$RUN/containerd.sock
cgroupDriver: cgroupfs
# This machine's kernel mounts cgroup v1 (hybrid); Kubernetes 1.35 refuses v1 unless told.
failCgroupV1: false
failSwapOn: false
clusterDNS: [$NODE_IP]
clusterDomain: cluster.local
resolvConf: $STATE/resolv.conf
# The disk is shared with other work (Docker's images and build cache come and go by gigabytes).
# Under disk pressure the kubelet evicts every pod and deletes every unused image, and the
# images loaded from Docker (pause too) cannot be pulled back here: it did so twice, at the
# default 10% and again at 1Gi, when Docker builds beside it filled the disk. 0% disables the
# disk signals (the kubelet ignores 0% thresholds); memory pressure still evicts.
evictionHard: {memory.available: 256Mi, nodefs.available: "0%", imagefs.available: "0%",
               nodefs.inodesFree: "0%", imagefs.inodesFree: "0%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
maxPods: 60
EOF
  start kubelet "$KUBE_BIN/kubelet" --config="$STATE/kubelet.yaml" \
    --kubeconfig="$STATE/kubelet.kubeconfig" --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" \
    --root-dir="$STATE/kubelet" --cert-dir="$STATE/kubelet/pki" --v=1
  wait_for "node $NODE_NAME Ready" 180 kc wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s

  write_file "$STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $STATE/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
bindAddress: $NODE_IP
nodePortAddresses: [$NODE_IP/32]
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# conntrack limits are global sysctls: leave the host's alone.
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  start kube-proxy "$KUBE_BIN/kube-proxy" --config="$STATE/kube-proxy.yaml" --v=1
}

rbac_up() {
  # CoreDNS, a process on the node, reads Services, EndpointSlices, Pods and Namespaces.
  kc apply -f - >/dev/null <<'EOF'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "bgeflow:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "bgeflow:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "bgeflow:coredns"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "bgeflow:coredns"}]
EOF
}

dns_up() {
  write_file "$STATE/Corefile" <<EOF
.:53 {
    bind $NODE_IP
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $STATE/coredns.kubeconfig bgeflow
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 5
}
EOF
  # No "forward": there is nothing outside the cluster to ask (and nowhere to send it).
  start coredns "$CACHE/bin/coredns-$COREDNS_VERSION/coredns" -conf "$STATE/Corefile"
  wait_for coredns 60 in_ns busybox nslookup kubernetes.default.svc.cluster.local "$NODE_IP"
}

# shellcheck source=scripts/cluster/addons.sh
source "$here/addons.sh"

steps=("$@")
[[ ${#steps[@]} -gt 0 ]] || steps=(packages build netns pki control_plane rbac node dns addons)
for step in "${steps[@]}"; do
  case $step in
    packages) ensure_packages ;;
    build) bash "$here/build.sh" ;;
    netns|pki|control_plane|rbac|node|dns|addons) "${step}_up" ;;
    *) "$step" ;;  # one add-on, e.g. minio_up
  esac
done
log "done (${steps[*]}) in $((SECONDS - started_at))s; export KUBECONFIG=$STATE/admin.kubeconfig"
