"""Ingest throughput over a real S3 HTTP endpoint, as a ratio to a bare boto3 download.

Both run in this process against the same moto server and the same objects:

- baseline: ``get_object(...)["Body"].read()`` for every object, one after another (bytes only:
  no parsing, no validation, nothing written);
- bgeflow: ``bgeflow ingest`` of the same prefix (streamed, validated, deduped, split, written);
- for scale, a parse-only ceiling: msgspec (C) decoding the downloaded bytes into typed objects
  and nothing else. No ingest that reads every record in Python can beat that figure here.

The ratio is baseline seconds / ingest seconds (1.0 = ingest is as fast as merely downloading).
Goal: >= 0.8. Usage: ``python bench/ingest.py [--objects 8] [--lines 25000]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import socket
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=8)
    parser.add_argument("--lines", type=int, default=25_000, help="lines per object")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    try:
        run(args.objects, args.lines, args.repeats)
    finally:
        server.stop()


def run(objects: int, lines: int, repeats: int) -> None:
    import logging

    import msgspec

    from bgeflow.core.log import setup_logging
    from bgeflow.core.storage import s3_client
    from bgeflow.steps.ingest import IngestSpec, ingest

    setup_logging("WARNING")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's request log
    client = s3_client()
    client.create_bucket(Bucket="bench")
    rng = random.Random(0)
    words = [f"w{i}" for i in range(5000)]

    def sentence(n: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n))

    total_bytes = 0
    for o in range(objects):
        body = "".join(
            json.dumps({"query": f"{o}-{i} " + sentence(8), "pos": [sentence(60)], "neg": [sentence(60), sentence(60)]})
            + "\n"
            for i in range(lines)
        ).encode()
        total_bytes += len(body)
        client.put_object(Bucket="bench", Key=f"data/part-{o:03d}.jsonl", Body=body)
    keys = [f"data/part-{o:03d}.jsonl" for o in range(objects)]
    print(f"objects: {objects} × {lines} lines, {total_bytes / 1e6:.1f} MB over {os.environ['AWS_ENDPOINT_URL']}")

    baseline, parse_only, bgeflow_times = [], [], []
    class Line(msgspec.Struct):  # typed decoding builds no dicts: the fastest way to read these lines
        query: str
        pos: list[str]
        neg: list[str]

    decode_lines = msgspec.json.Decoder(Line).decode_lines
    for _ in range(repeats):
        start = time.perf_counter()
        bodies = [client.get_object(Bucket="bench", Key=k)["Body"].read() for k in keys]
        baseline.append(time.perf_counter() - start)
        assert sum(map(len, bodies)) == total_bytes
        gc.disable()  # the ceiling is the best case: no collector passes over the new objects
        start = time.perf_counter()
        assert sum(len(decode_lines(body)) for body in bodies) == objects * lines
        parse_only.append(time.perf_counter() - start)
        gc.enable()
        del bodies
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            result = ingest(IngestSpec.of(inputs=["s3://bench/data"], output=out))
            bgeflow_times.append(time.perf_counter() - start)
        assert result.report["counts"]["records"] == objects * lines

    base, parse, ours = min(baseline), min(parse_only), min(bgeflow_times)
    print(f"bare boto3 download: {base:.2f}s ({total_bytes / 1e6 / base:.1f} MB/s)")
    print(f"parse only (typed msgspec, no checks, nothing written): {parse:.2f}s ({total_bytes / 1e6 / parse:.1f} MB/s); "
          f"ceiling of the ratio for any ingest that parses: {base / parse:.2f}")
    print(f"bgeflow ingest:      {ours:.2f}s ({total_bytes / 1e6 / ours:.1f} MB/s, {objects * lines / ours:,.0f} records/s)")
    print(f"throughput_ratio_vs_bare_download: {base / ours:.2f}  (goal >= 0.8; best of {repeats})")


if __name__ == "__main__":
    main()
