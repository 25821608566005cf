#!/usr/bin/env python3
"""Write a one-layer OCI image archive (what ``ctr images import`` reads) from local files.

The local cluster needs a few tiny images of its own (the pod sandbox "pause" image and a
busybox image for smoke pods and the Training Operator's init container); nothing can be
pulled here, so they are made from binaries on this machine:

    oci_image.py --ref bgeflow.local/busybox:1 --out busybox.tar \
        --file /bin/busybox=/bin/busybox --link /bin/sh=busybox --entrypoint /bin/sh

With --base-manifest/--base-config (the JSON of an image containerd already holds, from
``ctr content get``) the new layer goes on top of that image's layers, and only the new blobs are
written: containerd finds the base layers' snapshots unpacked already, so a few MiB are added to a
multi-GiB image without exporting it from Docker again.

Deterministic: fixed mtimes and ordering, so the same inputs give the same image digest.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

EPOCH = 0


def _add_dirs(tar: tarfile.TarFile, path: str, seen: set[str]) -> None:
    parts = Path(path).parent.parts
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i]).lstrip("/")
        if d and d not in seen:
            seen.add(d)
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, EPOCH
            tar.addfile(info)


def layer(files: list[tuple[str, str]], links: list[tuple[str, str]], dirs: list[str]) -> bytes:
    raw = io.BytesIO()
    seen: set[str] = set()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in sorted(dirs):
            _add_dirs(tar, d.rstrip("/") + "/x", seen)
        for dest, src in sorted(files):
            _add_dirs(tar, dest, seen)
            data = Path(src).read_bytes()
            info = tarfile.TarInfo(dest.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), Path(src).stat().st_mode & 0o7777, EPOCH
            tar.addfile(info, io.BytesIO(data))
        for dest, target in sorted(links):
            _add_dirs(tar, dest, seen)
            info = tarfile.TarInfo(dest.lstrip("/"))
            info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, target, 0o777, EPOCH
            tar.addfile(info)
    return raw.getvalue()


def blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", required=True, help="image reference, e.g. bgeflow.local/pause:1")
    ap.add_argument("--out", required=True)
    ap.add_argument("--file", action="append", default=[], metavar="DEST=SRC")
    ap.add_argument("--link", action="append", default=[], metavar="DEST=TARGET", help="a symlink")
    ap.add_argument("--dir", action="append", default=[], metavar="DEST", help="an empty directory (e.g. /tmp)")
    ap.add_argument("--tree", action="append", default=[], metavar="DEST=SRCDIR", help="every file under SRCDIR")
    ap.add_argument("--base-manifest", help="OCI manifest JSON of the base image")
    ap.add_argument("--base-config", help="OCI config JSON of the base image")
    ap.add_argument("--entrypoint", nargs="+", default=[])
    ap.add_argument("--user", default="", help="numeric uid:gid the image runs as")
    args = ap.parse_args()

    files = [tuple(f.split("=", 1)) for f in args.file]
    for tree in args.tree:
        dest, src = tree.split("=", 1)
        files += [(f"{dest.rstrip('/')}/{p.relative_to(src)}", str(p)) for p in sorted(Path(src).rglob("*"))
                  if p.is_file() and "__pycache__" not in p.parts]
    tar = layer(files, [tuple(s.split("=", 1)) for s in args.link], args.dir)
    diff_id = "sha256:" + hashlib.sha256(tar).hexdigest()
    layer_digest, layer_data = blob(gzip.compress(tar, mtime=EPOCH))
    base_layers: list[dict] = []
    if args.base_manifest:
        base_layers = json.loads(Path(args.base_manifest).read_text())["layers"]
        config = json.loads(Path(args.base_config).read_text())
        config["rootfs"]["diff_ids"].append(diff_id)
        config.setdefault("history", []).append({"created_by": "scripts/cluster/oci_image.py " + " ".join(args.tree)})
    else:
        config = {
            "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": args.entrypoint or None, "User": args.user or None,
                       "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    config_digest, config_data = blob(json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": len(config_data)},
        "layers": [*base_layers, {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                  "digest": layer_digest, "size": len(layer_data)}],
    }
    manifest_digest, manifest_data = blob(json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": manifest["mediaType"], "digest": manifest_digest, "size": len(manifest_data),
                       "annotations": {"io.containerd.image.name": args.ref,
                                       "org.opencontainers.image.ref.name": args.ref.rsplit(":", 1)[-1]}}],
    }
    with tarfile.open(args.out, "w") as out:
        entries = [("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
                   ("index.json", json.dumps(index).encode())]
        entries += [(f"blobs/sha256/{d.split(':')[1]}", data) for d, data in
                    ((layer_digest, layer_data), (config_digest, config_data), (manifest_digest, manifest_data))]
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), EPOCH
            out.addfile(info, io.BytesIO(data))
    print(args.ref, manifest_digest)


if __name__ == "__main__":
    main()
