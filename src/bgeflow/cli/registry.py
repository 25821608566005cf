"""``bgeflow registry verify|gc``: check published versions, reclaim what interrupted publishes left.

A minimal verb over ``bgeflow.steps.publish.maintenance`` (the logic lives there, so a later
``bgeflow models`` verb can take these over as subcommands).
"""

from __future__ import annotations

import argparse
import json
import sys

from bgeflow.core.errors import StepFailed


def register(subparsers: argparse._SubParsersAction) -> None:
    from bgeflow.steps.publish.maintenance import DEFAULT_OLDER_THAN_S

    p = subparsers.add_parser(
        "registry",
        help="verify published versions; list or reclaim what interrupted publishes left (gc)",
        description="verify: every file of a version (or of every version of a name) against its manifest "
        "(size and sha256). gc: version folders without a manifest, .staging/ of older releases and "
        "bgeflow-publish-* temp folders, older than --older-than; listed, and deleted with --delete.",
        allow_abbrev=False,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser("verify", help="check versions against their manifests", allow_abbrev=False)
    check.add_argument("--registry", required=True, metavar="URI", help="registry root: s3://bucket/prefix or a directory")
    check.add_argument("--name", required=True, help="the model's name in the registry")
    check.add_argument("--version", default=None, help="one version or pointer (default: every complete version)")
    check.add_argument("--no-checksums", dest="checksums", action="store_false",
                       help="sizes only (no re-read of every object)")
    gc = actions.add_parser("gc", help="list (and with --delete reclaim) leftovers of interrupted publishes",
                            allow_abbrev=False)
    gc.add_argument("--registry", required=True, metavar="URI", help="registry root: s3://bucket/prefix or a directory")
    gc.add_argument("--name", default=None, help="one model name (default: every name in the registry)")
    gc.add_argument("--older-than", type=float, default=DEFAULT_OLDER_THAN_S, metavar="SECONDS",
                    help="leave younger leftovers alone: they may be a publish still running (default: %(default)s)")
    gc.add_argument("--delete", action="store_true", help="reclaim them (default: only list)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bgeflow.steps.publish.maintenance import find_orphans, reclaim, verify_versions
    from bgeflow.steps.publish.registry import check_name

    if args.name:
        check_name(args.name, "name")
    if args.action == "verify":
        problems = verify_versions(args.registry, args.name, args.version, checksums=args.checksums)
        print(json.dumps({"versions": problems}, ensure_ascii=False, indent=2))
        bad = {v: p for v, p in problems.items() if p}
        if bad:
            first_version, first = next(iter(bad.items()))
            raise StepFailed(f"{len(bad)} version(s) differ from their manifest; first: {first_version}: {first[0]}")
        return 0
    orphans = find_orphans(args.registry, args.name, older_than_s=args.older_than)
    removed = reclaim(orphans) if args.delete else 0
    print(json.dumps({"orphans": [o.to_dict() for o in orphans], "deleted": args.delete, "removed": removed},
                     ensure_ascii=False, indent=2))
    if orphans and not args.delete:
        print(f"bgeflow registry gc: {len(orphans)} leftover(s) listed; --delete reclaims them", file=sys.stderr)
    return 0
