"""The local cluster's real node: containerd, runc, a CNI bridge, kubelet, kube-proxy, CoreDNS.

`hack/cluster` imports this module (up, down, status, load-image, node-exec);
`hack/setup` calls build_go_tools(). Only the standard library is used.

Isolation, so that nothing of the node touches the host beyond what `down`
removes, and two clusters could each run one:

- Network: the node is a network namespace of its own (kept by a bind mount on
  a file of the node's, not in /run/netns), joined to the host by a veth pair
  on a free /30 of 10.250.0.0/16: the host has the first address, the node the
  second (its InternalIP). containerd, kubelet, kube-proxy and CoreDNS run inside
  it (`nsenter --net`: they still share the host's mounts), so the CNI bridge,
  the pods' veths, kube-proxy's iptables rules and the node's ports (kubelet
  10250, ...) live only there. Pod traffic leaving the node is masqueraded to
  the node's address. The apiserver listens on the host and advertises the
  host's address on the link: the `kubernetes` Service (10.96.0.1:443) reaches
  it from pods through kube-proxy. CoreDNS, on the node's address, is the pods'
  cluster DNS. When the host has no route yet to the service and pod CIDRs,
  `up` adds routes to them via the node, so the host reaches ClusterIPs and pod
  IPs directly; `hack/cluster node-exec CMD` runs CMD inside the node's network.
- Files: configuration, pid files and kubeconfigs in $STATE/node; the node's
  data (containerd root and state, sockets, kubelet root, pod logs, CNI state,
  the network namespace) in /var/lib/modelport/<id>, a short path because unix
  socket paths are limited to 107 bytes and the kubelet puts sockets under its
  root.
- cgroups: the kubelet's cgroup root is /modelport-<id> in every hierarchy
  (cgroupfs driver, cgroup v1 or v2).

`teardown` kills every process in those cgroups and every containerd shim of
this node, unmounts everything under the node's directories (which frees the
network namespace, and with it the bridge, the veths and the iptables rules),
removes the host's end of the link with its routes, the cgroups, the kubelet's
/var/log/containers links and the shims' sockets, and puts back the kernel
settings the kubelet changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import ipaddress
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

NODE_LABELS = {"modelport.io/node-kind": "real", "modelport.io/real-node": "true"}
# Pods opt in to the real node: they tolerate this taint and select the label.
# Without the taint, the scheduler would spread any pod onto it, and pods whose
# images exist nowhere (most test pods) would fail there instead of running on
# a kwok node.
TAINT = {"key": "modelport.io/real-node", "value": "true", "effect": "NoSchedule"}
PAUSE_IMAGE = "modelport.local/pause:3.10"
LINK_NET = ipaddress.IPv4Network("10.250.0.0/16")
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
CGROUP_FS = Path("/sys/fs/cgroup")
# What the kubelet writes at start (pkg/kubelet/cm: setupKernelTunables); `down` restores them.
KERNEL_TUNABLES = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
COMPONENTS = ("containerd", "kubelet", "kube-proxy", "coredns")
# Small Go programs of hack/node/<name>, built into the cache on first use.
GO_TOOLS = ("pause", "coredns")


def log(message: str) -> None:
    print(f"[cluster] {message}", file=sys.stderr, flush=True)


def sh(*args: str, check: bool = True, input: bytes | None = None) -> str:
    done = subprocess.run(args, capture_output=True, input=input, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} exited {done.returncode}: {done.stderr.decode(errors='replace')}"
        )
    return done.stdout.decode(errors="replace")


# --- whether this machine can run a real node -------------------------------------------


def cni_bin_dir() -> Path | None:
    for d in CNI_BIN_DIRS:
        if all((Path(d) / p).is_file() for p in ("bridge", "host-local", "loopback")):
            return Path(d)
    return None


def missing_requirements(bin_dir: Path) -> list[str]:
    """What this machine lacks for a real node (empty when it can run one)."""
    missing = []
    if os.name != "posix" or not Path("/proc/self/ns/net").exists():
        return ["Linux"]
    if os.geteuid() != 0:
        missing.append("root (the node creates network namespaces, mounts and cgroups)")
    for tool in ("containerd", "containerd-shim-runc-v2", "ctr", "runc", "iptables", "ip",
                 "nsenter", "unshare", "mount", "umount"):  # fmt: skip
        if not shutil.which(tool):
            missing.append(tool)
    if cni_bin_dir() is None:
        missing.append("CNI plugins (containernetworking-plugins)")
    for b in ("kubelet", "kube-proxy"):
        if not (bin_dir / b).is_file():
            missing.append(f"{bin_dir / b} (hack/build-binaries)")
    if not all(go_tool(t).is_file() for t in GO_TOOLS) and not shutil.which("go"):
        missing.append("go (to build hack/node/pause and hack/node/coredns)")
    if not any(CGROUP_FS.glob("*/cgroup.procs")) and not (CGROUP_FS / "cgroup.procs").exists():
        missing.append("a cgroup filesystem at /sys/fs/cgroup")
    return missing


# --- the node's plan, kept in $STATE/node/node.json --------------------------------------


@dataclass
class Node:
    state: Path  # $STATE/node: configuration, pids, certificates' users
    name: str
    id: str
    data: str  # /var/lib/modelport/<id>
    host_veth: str
    host_ip: str
    node_ip: str
    link_prefix: int
    pod_cidr: str
    service_cidr: str
    kubelet_port: int
    kubelet_healthz_port: int
    proxy_healthz_port: int
    proxy_metrics_port: int
    host_routes: list[str] = field(default_factory=list)
    tunables: dict[str, str] = field(default_factory=dict)

    # paths
    @property
    def data_dir(self) -> Path:
        return Path(self.data)

    @property
    def sock(self) -> Path:
        return self.data_dir / "containerd.sock"

    @property
    def kubelet_root(self) -> Path:
        return self.data_dir / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.data_dir / "pod-logs"

    @property
    def cgroup_root(self) -> str:
        return f"/modelport-{self.id}"

    @property
    def netns_path(self) -> Path:
        """The node's network namespace, kept by a bind mount on this file."""
        return self.data_dir / "netns"

    def pid_file(self, name: str) -> Path:
        return self.state / f"{name}.pid"

    def save(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        data = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        (self.state / "node.json").write_text(json.dumps(data, indent=2) + "\n")

    def in_netns(self, *args: str) -> list[str]:
        return ["nsenter", f"--net={self.netns_path}", "--", *args]


def node_id(cluster_state: Path) -> str:
    return hashlib.sha256(str(cluster_state.resolve()).encode()).hexdigest()[:10]


def load(cluster_state: Path) -> Node | None:
    try:
        data = json.loads((cluster_state / "node" / "node.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    data["state"] = Path(data["state"])
    known = Node.__dataclass_fields__
    return Node(**{k: v for k, v in data.items() if k in known})


def _used_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    used: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for line in sh("ip", "-4", "-o", "addr", "show").splitlines():
        parts = line.split()
        if "inet" in parts:
            used.append(ipaddress.ip_interface(parts[parts.index("inet") + 1]).network)
    for line in sh("ip", "-4", "route", "show", "table", "all").splitlines():
        dst = line.split()[0] if line.split() else ""
        with contextlib.suppress(ValueError):
            if dst not in ("default", "local", "broadcast", "unreachable"):
                used.append(ipaddress.ip_network(dst, strict=False))
    return used


def _free_link(seed: str) -> ipaddress.IPv4Network:
    used = _used_networks()
    links: list[ipaddress.IPv4Network] = list(LINK_NET.subnets(new_prefix=30))
    start = int(seed, 16) % len(links)
    for i in range(len(links)):
        net = links[(start + i) % len(links)]
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise RuntimeError(f"no free /30 left in {LINK_NET} for the node's link")


def plan(cluster_state: Path, service_cidr: str) -> Node:
    nid = node_id(cluster_state)
    link = _free_link(nid)
    hosts = list(link.hosts())
    return Node(
        state=cluster_state / "node",
        name=os.environ.get("MODELPORT_NODE_NAME", "real-0"),
        id=nid,
        data=f"/var/lib/modelport/{nid}",
        host_veth=f"mph{nid[:8]}",
        host_ip=str(hosts[0]),
        node_ip=str(hosts[1]),
        link_prefix=link.prefixlen,
        pod_cidr=os.environ.get("MODELPORT_NODE_POD_CIDR", "10.245.0.0/24"),
        service_cidr=service_cidr,
        kubelet_port=int(os.environ.get("MODELPORT_KUBELET_PORT", "10250")),
        kubelet_healthz_port=int(os.environ.get("MODELPORT_KUBELET_HEALTHZ_PORT", "10248")),
        proxy_healthz_port=int(os.environ.get("MODELPORT_PROXY_HEALTHZ_PORT", "10256")),
        proxy_metrics_port=int(os.environ.get("MODELPORT_PROXY_METRICS_PORT", "10249")),
    )


# --- network ----------------------------------------------------------------------------


def setup_network(node: Node) -> None:
    """The node's network namespace, its link to the host, NAT and host routes."""
    hv = node.host_veth
    # Not `ip netns add`: that also turns /run/netns into a mount of its own,
    # which would outlive the node. A bind mount on a file of the node's does not.
    node.data_dir.mkdir(parents=True, exist_ok=True)
    node.netns_path.touch()
    sh("unshare", f"--net={node.netns_path}", "true")

    def ip(*args: str) -> None:
        sh(*node.in_netns("ip", *args))

    # The pair is made inside, and one end handed out to this process's namespace.
    ip("link", "add", "eth0", "type", "veth", "peer", "name", hv)
    ip("link", "set", hv, "netns", str(os.getpid()))
    sh("ip", "addr", "add", f"{node.host_ip}/{node.link_prefix}", "dev", hv)
    sh("ip", "link", "set", hv, "up")
    ip("link", "set", "lo", "up")
    ip("addr", "add", f"{node.node_ip}/{node.link_prefix}", "dev", "eth0")
    ip("link", "set", "eth0", "up")
    ip("route", "add", "default", "via", node.host_ip)
    # /proc/sys/net is per network namespace: these change the node, not the host.
    sysctls = {
        "net/ipv4/ip_forward": "1",
        "net/bridge/bridge-nf-call-iptables": "1",
        "net/bridge/bridge-nf-call-ip6tables": "1",
    }
    for key, value in sysctls.items():
        sh(*node.in_netns("sh", "-c", f"echo {value} > /proc/sys/{key}"), check=False)
    # Pods reach the host (the apiserver) as the node's address.
    sh(*node.in_netns("iptables", "-t", "nat", "-A", "POSTROUTING", "-s", node.pod_cidr,
                      "-o", "eth0", "-j", "MASQUERADE"))  # fmt: skip
    used = _used_networks()
    for cidr in (node.service_cidr, node.pod_cidr):
        net = ipaddress.ip_network(cidr)
        if any(net.overlaps(u) for u in used if u.prefixlen > 0):
            log(f"real node: the host already routes {cidr}; not adding a route to it "
                "(use `hack/cluster node-exec`)")  # fmt: skip
            continue
        sh("ip", "route", "add", cidr, "via", node.node_ip, "dev", hv)
        node.host_routes.append(cidr)


# --- configuration files ----------------------------------------------------------------


def write_configs(node: Node, pki: Path, cni_dir: Path) -> None:
    d, s = node.data_dir, node.state
    for sub in ("containerd/root", "containerd/state", "runc", "kubelet", "pod-logs",
                "cni/net.d", "cni/ipam"):  # fmt: skip
        (d / sub).mkdir(parents=True, exist_ok=True)
    (s / "data").unlink(missing_ok=True)
    (s / "data").symlink_to(d)
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    (s / "containerd.toml").write_text(f"""\
version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{node.sock}"

[ttrpc]
  address = "{node.sock}.ttrpc"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  enable_unprivileged_ports = true
  enable_unprivileged_icmp = true
  # A negative oom_score_adj needs CAP_SYS_RESOURCE, which some sandboxes (this
  # project's CI VMs among them) do not grant: keep containers' at or above ours.
  restrict_oom_score_adj = true

  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [{cri}.containerd.runtimes.runc.options]
        BinaryName = "{shutil.which("runc")}"
        Root = "{d}/runc"
        SystemdCgroup = false

  [{cri}.cni]
    bin_dir = "{cni_dir}"
    conf_dir = "{d}/cni/net.d"
    max_conf_num = 1
""")
    conflist = {
        "cniVersion": "0.4.0",
        "name": "modelport",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": node.pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(d / "cni" / "ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    (d / "cni" / "net.d" / "10-modelport.conflist").write_text(json.dumps(conflist, indent=2))

    kubelet = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node.node_ip,
        "port": node.kubelet_port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": node.kubelet_healthz_port,
        "tlsCertFile": str(pki / "kubelet.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{node.sock}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": node.cgroup_root,
        "cgroupsPerQOS": True,
        "failCgroupV1": False,
        "failSwapOn": False,
        "podLogsDir": str(node.pod_logs),
        "volumePluginDir": str(node.data_dir / "volume-plugins"),
        "clusterDomain": "cluster.local",
        # CoreDNS on the node answers for the cluster, and only for it: nothing
        # beyond the host is reachable, so the host's resolvers are not passed on
        # (a name outside the cluster fails at once instead of timing out).
        "clusterDNS": [node.node_ip],
        "resolvConf": str(s / "resolv.conf"),
        "registerWithTaints": [TAINT],
        "maxPods": 50,
        # Images cannot be pulled again (no registry): never garbage-collect them,
        # and keep evictions for a disk or memory that is really full.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "2%",
            "nodefs.inodesFree": "2%",
            "imagefs.available": "2%",
        },
        # How often each pod is synced: also how soon a changed Secret or
        # ConfigMap reaches mounted files (default 1m).
        "syncFrequency": "10s",
        "serializeImagePulls": False,
        "protectKernelDefaults": False,
    }
    (s / "kubelet.json").write_text(json.dumps(kubelet, indent=2) + "\n")
    (s / "resolv.conf").write_text("")

    proxy = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(s / "kube-proxy.kubeconfig")},
        "hostnameOverride": node.name,
        "bindAddress": node.node_ip,
        "clusterCIDR": node.pod_cidr,
        "healthzBindAddress": f"127.0.0.1:{node.proxy_healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{node.proxy_metrics_port}",
        "nodePortAddresses": [f"{node.node_ip}/32"],
        # Leave the host-wide conntrack table settings alone.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"syncPeriod": "30s", "minSyncPeriod": "0s", "localhostNodePorts": False},
    }
    (s / "kube-proxy.json").write_text(json.dumps(proxy, indent=2) + "\n")

    (s / "Corefile").write_text(f"""\
.:53 {{
    bind {node.node_ip}
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {s / "coredns.kubeconfig"} modelport-local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    loadbalance
    cache 5
}}
""")
    # What the kubernetes plugin reads (upstream's system:coredns ClusterRole).
    rbac = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                 "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                 "verbs": ["list", "watch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "system:coredns"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                          "name": "system:coredns"}],
        },
    ]  # fmt: skip
    (s / "coredns-rbac.json").write_text(
        json.dumps({"apiVersion": "v1", "kind": "List", "items": rbac}, indent=2) + "\n"
    )


def make_cgroups(node: Node) -> None:
    """The kubelet's --cgroup-root must exist before it starts."""
    for hierarchy in _hierarchies():
        path = hierarchy / node.cgroup_root.lstrip("/")
        path.mkdir(exist_ok=True)
        for f in ("cpuset.cpus", "cpuset.mems"):  # an empty cpuset admits no process
            if (path / f).exists() and not (path / f).read_text().strip():
                (path / f).write_text((hierarchy / f).read_text())


def _hierarchies() -> list[Path]:
    if (CGROUP_FS / "cgroup.procs").exists():  # cgroup v2 only
        return [CGROUP_FS]
    return [p for p in sorted(CGROUP_FS.iterdir()) if (p / "cgroup.procs").exists()]


def save_tunables(node: Node) -> None:
    """Remember the kernel settings the kubelet will change, for `down` to put back;
    only the first of several real nodes on a host sees (and restores) the originals."""
    others = node.data_dir.parent
    if others.is_dir() and any(d.name != node.id for d in others.iterdir()):
        return
    for key in KERNEL_TUNABLES:
        with contextlib.suppress(OSError):
            node.tunables[key] = (Path("/proc/sys") / key).read_text().strip()


# --- processes --------------------------------------------------------------------------


def command(node: Node, name: str, bin_dir: Path) -> list[str]:
    s = node.state
    if name == "containerd":
        return node.in_netns("containerd", f"--config={s / 'containerd.toml'}")
    if name == "kubelet":
        return node.in_netns(
            str(bin_dir / "kubelet"),
            f"--config={s / 'kubelet.json'}",
            f"--kubeconfig={s / 'kubelet.kubeconfig'}",
            f"--root-dir={node.kubelet_root}",
            f"--hostname-override={node.name}",
            f"--node-ip={node.node_ip}",
            "--node-labels=" + ",".join(f"{k}={v}" for k, v in NODE_LABELS.items()),
            "--v=1",
        )
    if name == "kube-proxy":
        return node.in_netns(str(bin_dir / "kube-proxy"), f"--config={s / 'kube-proxy.json'}",
                             "--v=1")  # fmt: skip
    if name == "coredns":
        return node.in_netns(str(go_tool("coredns")), "-conf", str(s / "Corefile"))
    raise ValueError(name)


def start(node: Node, name: str, bin_dir: Path, logs: Path) -> None:
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"{name}.log").open("ab") as out:
        proc = subprocess.Popen(
            command(node, name, bin_dir),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    node.pid_file(name).write_text(str(proc.pid))


def running_pid(node: Node, name: str) -> int | None:
    try:
        pid = int(node.pid_file(name).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if alive(pid) else None


def ctr(node: Node, *args: str, input: bytes | None = None) -> str:
    return sh("ctr", f"--address={node.sock}", "--namespace=k8s.io", *args, input=input)


def containerd_ready(node: Node) -> bool:
    if not node.sock.exists():
        return False
    done = subprocess.run(["ctr", f"--address={node.sock}", "version"], capture_output=True)
    return done.returncode == 0


def proxy_healthy(node: Node) -> bool:
    """kube-proxy has written the rules of the `kubernetes` Service into the node."""
    rules = sh(*node.in_netns("iptables-save", "-t", "nat"), check=False)
    return "default/kubernetes:https" in rules and "KUBE-SEP-" in rules


def pause_image_tar(pause_binary: Path) -> bytes:
    """A docker-archive image holding only the pause binary, made without a registry."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as layer:
        info = layer.gettarinfo(str(pause_binary), arcname="pause")
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        info.mode = 0o755
        with pause_binary.open("rb") as f:
            layer.addfile(info, f)
    layer_bytes = layer_buf.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "hack/node/realnode.py"}],
    }).encode()  # fmt: skip
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": [PAUSE_IMAGE], "Layers": ["layer.tar"]}]
    ).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, data in (("layer.tar", layer_bytes), (config_name, config),
                           ("manifest.json", manifest)):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def go_tool(name: str) -> Path:
    """Where hack/node/<name> is built to in the cache, keyed by its source."""
    src = Path(__file__).resolve().parent / name
    digest = hashlib.sha256()
    for f in ("go.mod", "go.sum", "main.go"):
        if (src / f).is_file():
            digest.update((src / f).read_bytes())
    cache = Path(os.environ.get("MODELPORT_CACHE", Path.home() / ".cache" / "modelport"))
    return cache / "bin" / f"{name}-{digest.hexdigest()[:16]}" / name


def build_go_tools() -> None:
    """Build what is missing of GO_TOOLS (CoreDNS: about 2 minutes cold)."""
    for name in GO_TOOLS:
        binary = go_tool(name)
        if binary.is_file():
            continue
        log(f"building hack/node/{name}")
        binary.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "CGO_ENABLED": "0",
            "GOFLAGS": "-mod=mod",
            "GOPROXY": os.environ.get("GOPROXY", "https://proxy.golang.org"),
        }
        done = subprocess.run(
            ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", f"{binary}.tmp", "."],
            cwd=Path(__file__).resolve().parent / name, env=env, capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"go build hack/node/{name}: {done.stderr[-2000:]}")
        Path(f"{binary}.tmp").rename(binary)


def import_pause(node: Node) -> None:
    ctr(node, "images", "import", "-", input=pause_image_tar(go_tool("pause")))


def dns_answers(server: str, name: str, timeout: float = 1.0) -> list[str]:
    """The A records `server` gives for `name` (a bare DNS query over UDP)."""
    query = struct.pack(">HHHHHH", 0x4D50, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(p)]) + p.encode() for p in name.strip(".").split(".")) + b"\0"
    query += struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(query, (server, 53))
        reply = sock.recv(4096)
    count = struct.unpack(">H", reply[6:8])[0]
    pos = len(query)  # the question comes back as asked
    found = []
    for _ in range(count):
        while reply[pos] and reply[pos] & 0xC0 != 0xC0:  # the owner name's labels
            pos += reply[pos] + 1
        pos += 2 if reply[pos] else 1  # a compression pointer, or the root label
        rtype, _, _, length = struct.unpack(">HHIH", reply[pos : pos + 10])
        pos += 10
        if rtype == 1 and length == 4:
            found.append(socket.inet_ntoa(reply[pos : pos + 4]))
        pos += length
    return found


def normalized(image: str) -> str:
    """The full reference containerd stores an image under (docker.io/library/x:latest)."""
    name, _, digest = image.partition("@")
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    if not digest and ":" not in name.rsplit("/", 1)[1]:
        name += ":latest"
    return f"{name}@{digest}" if digest else name


def has_image(node: Node, image: str) -> bool:
    """The node holds IMAGE, and it is the same image that Docker has under that name."""
    docker_id = sh("docker", "image", "inspect", "--format", "{{.Id}}", image).strip()
    rows = ctr(node, "images", "ls", f"name=={normalized(image)}").splitlines()[1:]
    if not rows:
        return False
    manifest = json.loads(ctr(node, "content", "get", rows[0].split()[2]))
    return bool(manifest.get("config", {}).get("digest") == docker_id)


def load_image(node: Node, image: str) -> bool:
    """`docker save IMAGE` into the node's containerd, where the kubelet finds it.

    Returns False when the node already had that very image (nothing to do).
    """
    if has_image(node, image):
        return False
    save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
    assert save.stdout is not None
    imported = subprocess.run(
        ["ctr", f"--address={node.sock}", "--namespace=k8s.io", "images", "import", "-"],
        stdin=save.stdout,
        capture_output=True,
        check=False,
    )
    save.stdout.close()
    if save.wait() != 0:
        raise RuntimeError(f"docker save {image} failed (is the image built? hack/docker image)")
    if imported.returncode != 0:
        raise RuntimeError(f"ctr images import: {imported.stderr.decode(errors='replace')}")
    return True


# --- teardown ---------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """The process runs (a zombie does not: its parent, often init, reaps it later)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it, when `up` started it in this process
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _stop(pids: list[int], timeout: float) -> None:
    """SIGTERM to each process group, SIGKILL to those left after `timeout`."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def _cgroup_dirs(node: Node) -> list[Path]:
    """Every cgroup under the node's root, deepest first."""
    dirs: list[Path] = []
    for hierarchy in _hierarchies():
        root = hierarchy / node.cgroup_root.lstrip("/")
        if root.is_dir():
            dirs.extend(p for p in root.rglob("*") if p.is_dir())
            dirs.append(root)
    return sorted(dirs, key=lambda p: len(p.parts), reverse=True)


def _cgroup_pids(node: Node) -> set[int]:
    pids: set[int] = set()
    for d in _cgroup_dirs(node):
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in (d / "cgroup.procs").read_text().split())
    return pids


def _pids_where(match: Callable[[Path], bool]) -> set[int]:
    """The processes whose /proc directory `match` accepts (gone ones skipped)."""
    pids = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if match(proc):
                    pids.add(int(proc.name))
    return pids


def _shim_pids(node: Node) -> set[int]:
    """containerd shims of this node (they leave containerd's process group)."""
    needle = str(node.sock).encode()

    def shim(proc: Path) -> bool:
        cmdline = (proc / "cmdline").read_bytes()
        return b"containerd-shim" in cmdline and needle in cmdline

    return _pids_where(shim)


def _shim_sockets(node: Node) -> list[Path]:
    """The sockets of this node's shims: containerd puts them in /run/containerd/s
    whatever its configuration, and a killed shim leaves its socket there."""
    sockets = []
    tasks = node.data_dir / "containerd" / "state" / "io.containerd.runtime.v2.task"
    for address in tasks.glob("*/*/address"):
        with contextlib.suppress(OSError):
            path = Path(address.read_text().strip().removeprefix("unix://"))
            if path.parent == Path("/run/containerd/s"):
                sockets.append(path)
    return sockets


def _kill_all(pids_of: Callable[[], set[int]], what: str) -> None:
    """SIGKILL whatever `pids_of()` names until it names nothing (a test cluster's
    pods need no graceful stop, and a container's PID 1 ignores SIGTERM unless it
    handles it)."""
    deadline = time.monotonic() + 10
    while (pids := pids_of()) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    if pids:
        log(f"real node: {what} still running after SIGKILL: {sorted(pids)}")


def _mounts_under(roots: list[Path]) -> list[str]:
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if any(point == str(r) or point.startswith(str(r) + "/") for r in roots):
            mounts.append(point)
    return mounts


def leftovers(node: Node) -> list[str]:
    """What of this node still exists on the host (empty after a clean teardown)."""
    found = [f"process {p}" for p in sorted(_cgroup_pids(node) | _shim_pids(node))]
    for name in COMPONENTS:
        pid = running_pid(node, name)
        if pid:
            found.append(f"{name} pid {pid}")
    found += [f"mount {m}" for m in _mounts_under([node.data_dir, node.state])]
    if _mounts_under([node.netns_path]):
        found.append(f"netns {node.netns_path}")
    if Path(f"/sys/class/net/{node.host_veth}").exists():
        found.append(f"link {node.host_veth}")
    found += [f"cgroup {d}" for d in _cgroup_dirs(node)]
    if node.data_dir.exists():
        found.append(f"directory {node.data_dir}")
    with contextlib.suppress(OSError):
        for link in Path("/var/log/containers").iterdir():
            if link.is_symlink() and str(link.readlink()).startswith(str(node.pod_logs)):
                found.append(f"log link {link}")
    return found


def _holders(data_dir: Path) -> set[int]:
    """Processes that belong to the node kept in `data_dir`: inside its network
    namespace, or naming its directory on their command line (its daemons)."""
    try:
        ns = (data_dir / "netns").stat()
    except OSError:
        ns = None
    needle = str(data_dir).encode()

    def belongs(proc: Path) -> bool:
        if ns is not None:
            mine = (proc / "ns" / "net").stat()
            if (mine.st_dev, mine.st_ino) == (ns.st_dev, ns.st_ino):
                return True
        return needle in (proc / "cmdline").read_bytes()

    return _pids_where(belongs)


def reclaim_abandoned(keep: str, min_age: float = 120) -> list[str]:
    """Remove real nodes whose every process is gone but whose network namespace,
    host link and routes remain (a machine whose processes were killed without
    `hack/cluster down`). Their routes to the Service and pod ranges would
    otherwise keep a new node from adding its own. Returns the ids removed."""
    removed = []
    root = Path("/var/lib/modelport")
    for data_dir in sorted(root.glob("*")) if root.is_dir() else []:
        nid = data_dir.name
        if nid == keep or not data_dir.is_dir():
            continue
        with contextlib.suppress(OSError):
            # A node that `up` is setting up right now has no process for a moment.
            if time.time() - data_dir.stat().st_mtime < min_age:
                continue
        if _holders(data_dir):
            continue
        ghost = Node(state=data_dir / "no-state", name="abandoned", id=nid, data=str(data_dir),
                     host_veth=f"mph{nid[:8]}", host_ip="", node_ip="", link_prefix=30,
                     pod_cidr="", service_cidr="", kubelet_port=0, kubelet_healthz_port=0,
                     proxy_healthz_port=0, proxy_metrics_port=0)  # fmt: skip
        if _cgroup_pids(ghost):
            continue
        left = teardown(ghost)
        log(f"real node: removed an abandoned node {nid} (its processes were gone)"
            + (f"; left behind: {'; '.join(left)}" if left else ""))  # fmt: skip
        removed.append(nid)
    return removed


def teardown(node: Node) -> list[str]:
    """Stop the node and remove all of it from the host; returns what could not be removed."""
    # The node's daemons first, so that nothing restarts what is killed next.
    _stop([p for p in (running_pid(node, n) for n in COMPONENTS) if p], 10)
    # The pods' processes (in the node's cgroups) and the shims watching them.
    sockets = _shim_sockets(node)
    _kill_all(lambda: _cgroup_pids(node) | _shim_pids(node), "pod processes or shims")
    for sock in sockets:
        sock.unlink(missing_ok=True)
    # Pod volumes, rootfs overlays, /dev/shm of sandboxes, network namespaces of
    # pods, the kubelet's own bind mount of its root: deepest first.
    for _ in range(3):
        mounts = _mounts_under([node.data_dir, node.state])
        if not mounts:
            break
        for point in sorted(set(mounts), key=len, reverse=True):
            if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                subprocess.run(["umount", "--lazy", point], capture_output=True)
    # Unmounting the node's network namespace (above) freed it, and with it the
    # bridge, the veths and the iptables rules; make sure of the link to the host
    # (a process still inside would keep the namespace).
    if Path(f"/sys/class/net/{node.host_veth}").exists():
        sh("ip", "link", "delete", node.host_veth, check=False)
    for d in _cgroup_dirs(node):
        with contextlib.suppress(OSError):
            d.rmdir()
    with contextlib.suppress(OSError):
        for link in Path("/var/log/containers").iterdir():
            if link.is_symlink() and str(link.readlink()).startswith(str(node.pod_logs)):
                link.unlink()
    for key, value in node.tunables.items():
        with contextlib.suppress(OSError):
            (Path("/proc/sys") / key).write_text(value)
    if not _mounts_under([node.data_dir]):
        shutil.rmtree(node.data_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            node.data_dir.parent.rmdir()  # /var/lib/modelport, when no other node uses it
    for name in COMPONENTS:
        node.pid_file(name).unlink(missing_ok=True)
    return leftovers(node) + [f"socket {s}" for s in sockets if s.exists()]
