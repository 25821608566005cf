"""Helpers the verb modules share: ``--config FILE.yaml`` and a fast S3 reachability check.

A settings file holds flag values by name (``--rerank-top-k 50`` is ``rerank-top-k: 50`` or
``rerank_top_k: 50``); flags given on the command line win over the file. A key that names no
flag of the verb is an error naming the key and the file.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from typing import Any

#: Namespace entries that are not flags of a verb.
_INTERNAL = {"func", "verb", "config", "s3_endpoint_url", "log_level"}


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, metavar="FILE.yaml",
                        help="read flag values from a YAML file (keys = flag names without '--'); "
                        "flags on the command line win")


def apply_config_file(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Fill ``args`` from ``args.config`` where the command line left a flag at its default."""
    path = getattr(args, "config", None)
    if not path:
        return args
    from bgeflow.config_file import load_mapping

    loaded = load_mapping(path, "flag names to values")
    flags = {a.dest: a for a in parser._actions if a.dest not in _INTERNAL and a.dest != "help"}
    by_name = {opt.lstrip("-").replace("-", "_"): a.dest for a in flags.values() for opt in a.option_strings}
    for key, value in loaded.items():
        dest = by_name.get(str(key).replace("-", "_"))
        if dest is None:
            raise ValueError(f"--config {path}: unknown key {key!r} (not a flag of this command)")
        action = flags[dest]
        if getattr(args, dest) != action.default:
            continue  # given on the command line
        if isinstance(action, argparse._AppendAction) and not isinstance(value, list):
            value = [value]
        if action.type is not None and value is not None:
            try:
                value = [action.type(v) for v in value] if isinstance(value, list) else action.type(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"--config {path}: key {key!r}: {exc}") from exc
        if action.choices is not None and value not in action.choices:
            raise ValueError(f"--config {path}: key {key!r} must be one of {', '.join(map(str, action.choices))}")
        setattr(args, dest, value)
    return args


def check_s3_reachable(uris: Iterable[str | None]) -> None:
    """Fail fast, in one line naming the endpoint, when the S3 store behind ``uris`` cannot be reached.

    One attempt with short timeouts: the normal client retries for a while, which is right for a
    flaky network in a pod but makes a typo in ``--s3-endpoint-url`` look like a hang.
    """
    buckets = sorted({u[len("s3://"):].split("/", 1)[0] for u in uris if u and u.startswith("s3://")})
    if not buckets:
        return
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    client: Any = boto3.session.Session().client(
        "s3", endpoint_url=endpoint,
        region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        config=Config(connect_timeout=3, read_timeout=10, retries={"mode": "standard", "max_attempts": 1}),
    )
    where = client.meta.endpoint_url
    for bucket in buckets:
        try:
            client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise FileNotFoundError(f"S3 bucket {bucket!r} does not exist at {where}") from None
            if code in ("403", "AccessDenied"):
                # Credentials may allow objects but not HeadBucket; the endpoint answered, which is all we check.
                continue
            raise RuntimeError(f"S3 endpoint {where} refused bucket {bucket!r}: {code or exc}") from None
        except BotoCoreError as exc:
            raise RuntimeError(f"cannot reach S3 endpoint {where} (bucket {bucket!r}): {exc}") from None
