"""``bgeflow models list|show|download|promote|verify|gc``: the model registry from the command line.

A model is named as the model card and ``bgeflow evaluate`` name it: ``<registry>/<name>`` (its
champion, else its latest version), ``<registry>/<name>@<version|latest|champion>`` or
``<registry>/<name>/<version>``, the registry a directory or an ``s3://`` prefix. ``--registry``,
``--name`` and ``--version`` say the same in three flags (the spelling of ``bgeflow registry``,
which stays as another name of this verb).

Output: on a terminal a short table; piped, or with ``--json``, one JSON document on stdout.
The work is done by ``bgeflow.steps.publish`` (``registry``, ``pointers``, ``maintenance``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any

from bgeflow.core.errors import BgeflowError, ConfigError, NotFoundError, StepFailed
from bgeflow.core.spec import not_a_folder

_REF_HELP = ("<registry>/<name>[@<version|latest|champion>] (or --registry/--name/--version); "
             "the registry: a directory or s3://bucket/prefix")


def register(subparsers: argparse._SubParsersAction) -> None:
    from bgeflow.steps.publish.maintenance import DEFAULT_OLDER_THAN_S

    p = subparsers.add_parser(
        "models", aliases=["registry"],
        help="the model registry: list, show, download, promote and verify versions; gc interrupted publishes",
        description=__doc__.split("\n\n", 1)[1].replace("\n", " ").replace("``", ""),
        allow_abbrev=False,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_text: str, *, ref: bool = True) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        if ref:
            sub.add_argument("ref", nargs="?", metavar="MODEL", help=_REF_HELP)
        sub.add_argument("--registry", metavar="URI", help="registry root: a directory or s3://bucket/prefix")
        sub.add_argument("--name", help="the model's name in the registry")
        if ref:
            sub.add_argument("--version", help="a version, latest or champion")
        sub.add_argument("--json", action="store_true", help="one JSON document on stdout (the default when piped)")
        return sub

    listing = action("list", "every model name of a registry with its versions, newest last", ref=False)
    listing.add_argument("where", nargs="?", metavar="REGISTRY", help="registry root (or --registry)")
    action("show", "one version: kind, base model, pointers, size, gate verdict and metrics")
    download = action("download", "a version's model/ folder (a Hugging Face repo, card included), every file "
                      "checked against the manifest")
    download.add_argument("dest", metavar="DIR", help="where to put the model's files (a new or empty folder, or "
                          "an earlier download of this version)")
    download.add_argument("--replace", action="store_true",
                          help="DIR holds other files (another model's): replace its contents with this version's")
    action("promote", "make a version the champion (the model bgeflow evaluate compares with and users load)")
    check = action("verify", "check a version, or every version of a name, against its manifest (size and sha256)")
    check.add_argument("--no-checksums", dest="checksums", action="store_false",
                       help="sizes only (no re-read of every object)")
    gc = action("gc", "list (and with --delete reclaim) leftovers of interrupted publishes: version folders "
                "without a manifest, .staging/ of older releases, bgeflow-publish-* temp folders", ref=False)
    gc.add_argument("where", nargs="?", metavar="REGISTRY", help="registry root (or --registry)")
    gc.add_argument("--older-than", type=float, default=DEFAULT_OLDER_THAN_S, metavar="SECONDS",
                    help="leave younger leftovers alone: they may be a publish still running (default: %(default)s)")
    gc.add_argument("--delete", action="store_true", help="reclaim them (default: only list)")
    p.set_defaults(func=run)


@dataclass(frozen=True)
class Target:
    """The registry, name and version (or pointer; "" when none was named) a command line points at."""

    registry: str
    name: str
    version: str


def target(args: argparse.Namespace, *, need_version: bool = False) -> Target:
    """What ``MODEL`` or ``--registry/--name/--version`` name.

    Raises:
        ConfigError: neither form given, both given, or a version needed and not named.
    """
    from bgeflow.steps.publish.registry import check_name, parse_ref

    if args.ref and (args.registry or args.name):
        raise ConfigError(f"{args.ref}: give the model either as MODEL or as --registry/--name, not both")
    if args.ref:
        parsed = parse_ref(args.ref, default="")
        if parsed is None:
            raise ConfigError(_not_a_ref(args.ref, args.action))
        registry, name, version = parsed
        if args.version:
            if version:
                raise ConfigError(f"{args.ref} names version {version!r} and --version {args.version!r}: keep one")
            version = args.version
    elif args.registry and args.name:
        registry, name, version = args.registry, args.name, args.version or ""
    else:
        raise ConfigError(f"name the model: MODEL as {_REF_HELP}")
    check_name(name, "model name")
    if need_version and not version:
        raise ConfigError(f"{registry}/{name}: name the version (<registry>/<name>@<version>, or --version)")
    return Target(registry.rstrip("/"), name, version)


def _not_a_ref(ref: str, action: str) -> str:
    """Why ``ref`` names no model: what it is instead (a registry root, a model folder) and what the action takes.

    Every non-reference was called "a model folder": a registry root given to ``models verify reg``
    read as if it were a model. Only called once ``ref`` failed to parse (it may list the folder).
    """
    from bgeflow.steps.publish.registry import is_model_location

    names = registry_root_names(ref)
    if names:
        return (f"{ref}: a registry root (models: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}), "
                f"not a model reference; models {action} takes <registry>/<name>[@version], e.g. "
                f"{ref.rstrip('/')}/{names[0]}")
    if is_model_location(ref):
        return f"{ref}: a model folder, not a registry reference ({_REF_HELP})"
    return f"{ref}: not a registry reference ({_REF_HELP})"


def registry_root_names(uri: str) -> list[str]:
    """The model names under ``uri`` when it is a registry root (it holds <name>/<version>/manifest.json or
    <name>/<pointer>.json), else []."""
    from bgeflow.core.storage import open_store
    from bgeflow.steps.publish.registry import MANIFEST, POINTERS

    pointer_files = {f"{p}.json" for p in POINTERS}
    try:
        keys = [info.key.split("/") for info in open_store(uri).list()]
    except (OSError, BgeflowError, StepFailed):  # not a listable place: no registry root either
        return []
    return sorted({k[0] for k in keys if (len(k) == 3 and k[2] == MANIFEST) or (len(k) == 2 and k[1] in pointer_files)})


def _registry(args: argparse.Namespace) -> str:
    where = args.where or args.registry
    if not where:
        raise ConfigError("name the registry: REGISTRY (a directory or s3://bucket/prefix) or --registry")
    if args.where and args.registry:
        raise ConfigError(f"{args.where}: give the registry either as REGISTRY or as --registry, not both")
    return str(where).rstrip("/")


def _chosen(t: Target) -> Any:
    """The version a target names; a bare name is its champion, else its latest (as ``fetch_model``)."""
    from bgeflow.steps.publish.registry import find_version, get_version

    if t.version:
        return get_version(t.registry, t.name, t.version)
    found = find_version(t.registry, t.name, "champion") or find_version(t.registry, t.name, "latest")
    if found is None:
        raise NotFoundError(f"registry {t.registry}/{t.name}: no complete version")
    return found


def _version_row(info: Any, pointers: dict[str, str | None]) -> dict[str, Any]:
    return {"version": info.version, "kind": info.kind, "created": info.created,
            "base_model": info.manifest.get("base_model"), "gate_passed": info.manifest.get("gate_passed"),
            "pointers": [p for p, v in pointers.items() if v == info.version],
            "files": len(info.files), "bytes": sum(int(f.get("size", 0)) for f in info.files),
            "content_hash": info.content_hash, "uri": info.uri}


def list_models(registry: str, name: str | None = None) -> dict[str, Any]:
    """``{"registry", "models": [{"name", "latest", "champion", "versions": [...]}]}`` (oldest version first)."""
    from bgeflow.steps.publish.maintenance import registry_names, registry_store
    from bgeflow.steps.publish.registry import POINTERS, find_version, list_versions

    registry_store(registry)  # with --name too: a registry that is not there is named, not listed empty
    models = []
    for model in [name] if name else registry_names(registry):
        versions = list_versions(registry, model)
        if not versions and name is None:
            continue  # a folder with only leftovers of an interrupted publish is no model (gc lists it)
        found = {p: find_version(registry, model, p) for p in POINTERS}
        pointers = {p: (info.version if info else None) for p, info in found.items()}
        models.append({"name": model, **pointers, "versions": [_version_row(v, pointers) for v in versions]})
    return {"registry": registry, "models": models}


def show_model(t: Target) -> dict[str, Any]:
    """One version as ``list`` shows it, plus its manifest's facts, metrics and card.

    The metrics and gate are this model's own (a retriever's are not its reranker's), as its card.
    """
    from bgeflow.steps.publish.card import own_columns
    from bgeflow.steps.publish.registry import POINTERS, find_version
    from bgeflow.steps.publish.verdict import own_gate

    info = _chosen(t)
    pointers = {p: (v.version if (v := find_version(t.registry, t.name, p)) else None) for p in POINTERS}
    doc = {"name": t.name, **_version_row(info, pointers),
           **{k: info.manifest.get(k) for k in ("base_model_id", "bgeflow_version")}}
    store = info.store()
    if store.exists("metrics.json"):
        metrics = json.loads(store.read_text("metrics.json"))
        doc["metrics"] = (own_columns(metrics, info.kind)["metrics"]).get("finetuned") or {}
        own = own_gate(metrics, info.kind)
        # From the metrics, not the manifest: versions published before verdicts were per model are shown right.
        doc["gate"], doc["gate_passed"] = (own["expression"], own["passed"]) if own else (None, None)
    card = next((f["path"] for f in info.files if f["path"].endswith("README.md")), None)
    doc["card"] = store.url(card) if card else None
    return doc


def run(args: argparse.Namespace) -> int:
    from bgeflow.steps.publish import maintenance, pointers, registry

    verb = f"bgeflow {args.verb} {args.action}"
    if args.action == "list":
        if args.name:
            registry.check_name(args.name, "model name")
        doc = list_models(_registry(args), args.name)
        _emit(args, doc, _list_table(doc))
    elif args.action == "show":
        doc = show_model(target(args))
        _emit(args, doc, _show_lines(doc))
    elif args.action == "download":
        # The destination is a plain argument, not a spec setting: the specs' folder check, called here.
        problem = not_a_folder(args.dest)
        if problem:
            raise ConfigError(f"destination (DIR): {problem}")
        t = target(args)
        info = _chosen(t)
        path = registry.download_model(t.registry, t.name, info.version, args.dest, replace=args.replace)
        doc = {"name": t.name, "version": info.version, "path": str(path),
               "files": sum(1 for f in info.files if f["path"].startswith(registry.MODEL_DIR + "/"))}
        _emit(args, doc, [f"{t.name}@{info.version}: {doc['files']} files in {path}"])
    elif args.action == "promote":
        t = target(args, need_version=True)
        doc = pointers.promote(t.registry, t.name, t.version).to_dict()
        was = f" (was {doc['previous']})" if doc["changed"] else " (already the champion)"
        _emit(args, doc, [f"{t.name}: champion is {doc['champion']}{was}"])
    elif args.action == "verify":
        t = target(args)
        problems = maintenance.verify_versions(t.registry, t.name, t.version or None, checksums=args.checksums)
        if not problems:
            # `verify /abs/reg` parses as name "reg" of registry "/abs": nothing to verify, and no hint why.
            names = registry_root_names(f"{t.registry}/{t.name}")
            if names:
                raise ConfigError(_not_a_ref(f"{t.registry}/{t.name}", args.action))
        bad = {v: p for v, p in problems.items() if p}
        # Said plainly, beside the per-version problems (empty lists read as nothing at all).
        status = "failed" if bad else ("ok" if problems else "no versions")
        _emit(args, {"status": status, "ok": not bad and bool(problems), "versions": problems},
              [f"{v}: {'intact' if not p else '; '.join(p)}" for v, p in problems.items()] or ["no versions"])
        if bad:
            first_version, first = next(iter(bad.items()))
            raise StepFailed(f"{len(bad)} version(s) differ from their manifest; first: {first_version}: {first[0]}")
    else:  # gc
        if args.name:
            registry.check_name(args.name, "model name")
        found = maintenance.find_orphans(_registry(args), args.name, older_than_s=args.older_than, include_young=True)
        orphans = [o for o in found if not o.young]
        young = [o for o in found if o.young]
        removed = maintenance.reclaim(orphans) if args.delete else 0
        # The young ones are shown too: "nothing to reclaim" while a leftover sits there read as a gc that missed it.
        doc = {"orphans": [o.to_dict() for o in orphans], "deleted": args.delete, "removed": removed,
               "too_young": [o.to_dict() for o in young]}
        _emit(args, doc, [f"{o.kind:<10} {o.objects:>6} objects {o.bytes:>12} bytes  {o.uri}" for o in orphans]
              or ["nothing to reclaim"])
        if orphans and not args.delete:
            print(f"{verb}: {len(orphans)} leftover(s) listed; --delete reclaims them", file=sys.stderr)
        if young:
            print(f"{verb}: {len(young)} leftover(s) younger than --older-than {args.older_than:g}s not reclaimed (a "
                  f"publish may still be writing them): {', '.join(o.uri for o in young[:3])}"
                  + (f" (+{len(young) - 3} more)" if len(young) > 3 else ""), file=sys.stderr)
    return 0


def _emit(args: argparse.Namespace, doc: dict[str, Any], lines: list[str]) -> None:
    """One JSON document when asked or piped (scripts read it), else the lines (a person reads them)."""
    if args.json or not sys.stdout.isatty():
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        print("\n".join(lines))


def _list_table(doc: dict[str, Any]) -> list[str]:
    if not doc["models"]:
        return [f"{doc['registry']}: no models"]
    lines = [f"{'name':<20} {'version':<28} {'kind':<9} {'created':<25} {'gate':<6} pointers"]
    for model in doc["models"]:
        for row in model["versions"]:
            gate = {True: "passed", False: "FAILED"}.get(row["gate_passed"], "-")
            lines.append(f"{model['name']:<20} {row['version']:<28} {row['kind']:<9} {row['created']:<25} "
                         f"{gate:<6} {','.join(row['pointers'])}")
    return lines


def _show_lines(doc: dict[str, Any]) -> list[str]:
    lines = [f"{doc['name']}@{doc['version']} ({doc['kind']}, {', '.join(doc['pointers']) or 'no pointer'})",
             f"  uri         {doc['uri']}", f"  created     {doc['created']}",
             f"  base model  {doc['base_model']}" + (f" ({doc['base_model_id']})" if doc.get("base_model_id") else ""),
             f"  files       {doc['files']} ({doc['bytes']} bytes)"]
    if doc.get("metrics"):
        gate = {True: "passed", False: "FAILED"}.get(doc["gate_passed"], "no verdict")
        lines.append(f"  gate        {doc.get('gate') or '(no rules)'}: {gate}")
        lines += [f"  {name:<18}{value:.4f}" for name, value in doc["metrics"].items()]
    if doc.get("card"):
        lines.append(f"  card        {doc['card']}")
    return lines
