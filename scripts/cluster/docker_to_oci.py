#!/usr/bin/env python3
"""Turn a ``docker save`` stream (stdin) into an OCI archive with gzip layers (stdout) for ``ctr import``.

Why: ``docker save`` writes uncompressed layers, and containerd keeps both the layer blob and
its unpacked snapshot. For bgeflow-gpu (one 7 GiB layer) that is 15 GiB on a disk shared with
Docker's own copy; compressed blobs (and load-images.sh dropping them once unpacked) keep the
peak near a third less and the end state at the snapshot alone.

Each layer is compressed as it streams in, into a spool directory (default /dev/shm: memory, so
the disk only ever holds the compressed blob once, inside containerd). Only stdlib.

    docker save IMAGE | docker_to_oci.py | ctr -n k8s.io images import -
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import signal
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path

CHUNK = 4 << 20
PREFIX = "docker-to-oci-"


def _exit_on(signum: int, _frame: object) -> None:
    # Python's default SIGTERM/SIGHUP handling ends the process without running ``finally``: the
    # spool (gigabytes of RAM in /dev/shm) outlived an interrupted `make e2e` until the machine ran
    # out of memory. Exiting through SystemExit runs the clean-up.
    raise SystemExit(128 + signum)


def remove_stale_spools(spool_root: Path) -> None:
    """Remove the spools of earlier runs whose process is gone (one killed with SIGKILL cannot clean up)."""
    for old in spool_root.glob(f"{PREFIX}*"):
        pid = old.name.removeprefix(PREFIX).split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)


def gzip_stream(src: io.BufferedReader, dest: Path) -> tuple[str, int, str]:
    """Compress src into dest (gzip, level 1); (sha256 of the gzip, its size, sha256 of the input)."""
    raw, packed = hashlib.sha256(), hashlib.sha256()
    size = 0
    comp = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: gzip container, no name or mtime
    with dest.open("wb") as out:
        def emit(data: bytes) -> None:
            nonlocal size
            if data:
                packed.update(data)
                out.write(data)
                size += len(data)

        while chunk := src.read(CHUNK):
            raw.update(chunk)
            emit(comp.compress(chunk))
        emit(comp.flush())
    return "sha256:" + packed.hexdigest(), size, "sha256:" + raw.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spool", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    args = ap.parse_args()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on)
    root = Path(args.spool or tempfile.gettempdir())
    remove_stale_spools(root)
    # The pid in the name lets a later run tell a dead run's spool from a live one's.
    spool = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=root))
    try:
        layers: dict[str, tuple[Path, str, int, str]] = {}  # docker path -> (file, digest, size, diff_id)
        files: dict[str, bytes] = {}  # small members: configs, manifest.json
        with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as stream:
            for member in stream:
                if not member.isfile():
                    continue
                fh = stream.extractfile(member)
                assert fh is not None
                # Docker < 25 names layers <id>/layer.tar; newer ones write an OCI layout whose
                # blobs are layers or configs alike: big ones are spooled, small ones kept.
                if member.name.endswith("layer.tar") or (member.name.startswith("blobs/") and member.size > 1 << 20):
                    dest = spool / f"layer-{len(layers)}"
                    layers[member.name] = (dest, *gzip_stream(fh, dest))  # type: ignore[arg-type]
                    continue
                files[member.name] = fh.read()
        (entry,) = json.loads(files["manifest.json"])
        config = files[entry["Config"]]
        diff_ids = json.loads(config)["rootfs"]["diff_ids"]
        for path in entry["Layers"]:  # small layers arrived as plain members
            if path not in layers:
                dest = spool / f"layer-{len(layers)}"
                layers[path] = (dest, *gzip_stream(io.BytesIO(files[path]), dest))  # type: ignore[arg-type]
        chosen = [layers[path] for path in entry["Layers"]]
        got = [diff for _, _, _, diff in chosen]
        if got != diff_ids:
            raise SystemExit(f"layer digests do not match the image config: {got} != {diff_ids}")
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                       "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s}
                       for _, d, s, _ in chosen],
        }).encode()
        manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        index = {"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
             "size": len(manifest), "annotations": {"io.containerd.image.name": tag}}
            for tag in entry.get("RepoTags") or []]}
        with tarfile.open(fileobj=sys.stdout.buffer, mode="w|") as out:
            def add(name: str, data: bytes | None = None, path: Path | None = None) -> None:
                info = tarfile.TarInfo(name)
                if path is not None:
                    info.size = path.stat().st_size
                    with path.open("rb") as fh:
                        out.addfile(info, fh)
                    path.unlink()  # free the spool as soon as it is sent
                else:
                    assert data is not None
                    info.size = len(data)
                    out.addfile(info, io.BytesIO(data))

            add("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
            for path, digest, _, _ in chosen:
                if path.exists():  # a layer listed twice is sent once
                    add(f"blobs/sha256/{digest.split(':')[1]}", path=path)
            add(f"blobs/sha256/{config_digest.split(':')[1]}", config)
            add(f"blobs/sha256/{manifest_digest.split(':')[1]}", manifest)
            add("index.json", json.dumps(index).encode())
        print(" ".join(d for _, d, _, _ in chosen), file=sys.stderr)
    finally:
        shutil.rmtree(spool, ignore_errors=True)


if __name__ == "__main__":
    main()
