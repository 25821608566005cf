"""Regenerate the example data shipped in ``src/bgeflow/examples/`` (run with CPython 3.11).

Real text without a download: each docstring of a fixed set of standard-library modules becomes a
record whose query is the docstring's one-line summary (or first sentence) and whose positive is
the rest. Negatives
are other docstrings' bodies picked at random (easy ones: ``bgeflow mine`` finds hard ones).
The Chinese slice is ``zh_seed.jsonl`` beside this script, written by hand.

The output depends on the Python version's docstrings, hence it is committed, not generated at
run time.
"""

from __future__ import annotations

import gzip
import importlib
import inspect
import json
import random
import re
import sys
from pathlib import Path

MODULES = [
    "abc", "argparse", "array", "ast", "asyncio", "base64", "bisect", "builtins", "bz2", "calendar",
    "cmath", "codecs", "collections", "concurrent.futures", "configparser", "contextlib", "copy", "csv",
    "dataclasses", "datetime", "decimal", "difflib", "email.message", "enum", "fileinput", "fnmatch",
    "fractions", "ftplib", "functools", "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "html",
    "http.client", "imaplib", "inspect", "io", "ipaddress", "itertools", "json", "locale", "logging",
    "lzma", "mailbox", "math", "mimetypes", "multiprocessing", "netrc", "operator", "os", "os.path",
    "pathlib", "pickle", "pkgutil", "platform", "plistlib", "poplib", "pprint", "queue", "random", "re",
    "sched", "secrets", "selectors", "shelve", "shlex", "shutil", "signal", "smtplib", "socket",
    "sqlite3", "ssl", "statistics", "string", "struct", "subprocess", "tarfile", "tempfile", "textwrap",
    "threading", "time", "timeit", "tokenize", "trace", "traceback", "types", "typing", "unicodedata",
    "unittest", "urllib.parse", "urllib.request", "uuid", "warnings", "wave", "weakref", "xml.dom.minidom",
    "xml.etree.ElementTree", "zipfile", "zlib", "zoneinfo", "asyncio.base_events", "asyncio.events",
    "asyncio.streams", "asyncio.tasks", "binascii", "cProfile", "code", "codeop", "collections.abc",
    "compileall", "contextvars", "copyreg", "dis", "doctest", "email.parser", "email.utils", "filecmp",
    "getopt", "graphlib", "html.parser", "http.cookiejar", "http.cookies", "http.server", "importlib",
    "importlib.metadata", "importlib.resources", "mmap", "numbers", "optparse", "pdb", "pickletools",
    "pstats", "py_compile", "pydoc", "quopri", "reprlib", "site", "socketserver", "stat", "symtable",
    "sysconfig", "tomllib", "unittest.mock", "urllib.robotparser", "wsgiref.simple_server", "wsgiref.util",
    "xml.sax.saxutils", "xmlrpc.client", "xmlrpc.server", "zipimport",
]
HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "src" / "bgeflow" / "examples"


def docstrings() -> dict[str, tuple[str, str]]:
    """``summary -> (summary, body)`` for docstrings with a real summary and body."""
    found: dict[str, tuple[str, str]] = {}
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        objects = [module]
        for name, obj in sorted(vars(module).items()):
            if name.startswith("_") or getattr(obj, "__module__", module_name) != module.__name__:
                continue
            objects.append(obj)
            if inspect.isclass(obj):
                objects += [v for m, v in sorted(vars(obj).items()) if not m.startswith("_") and callable(v)]
        for obj in objects:
            doc = inspect.getdoc(obj)
            if not doc:
                continue
            summary, _, body = doc.partition("\n\n")
            if not body:  # one paragraph: its first sentence is the summary
                summary, _, body = doc.partition(". ")
            summary = " ".join(summary.split())
            body = re.sub(r"\s+", " ", body).strip()
            if 20 <= len(summary) <= 200 and len(body) >= 40 and not summary.endswith(":"):
                found.setdefault(summary, (summary, body[:1500]))
    return {k: v for k, v in sorted(found.items())}


def main() -> None:
    rng = random.Random(20261127)
    pairs = list(docstrings().values())
    bodies = [body for _, body in pairs]
    records = []
    for summary, body in pairs:
        negatives = [b for b in rng.sample(bodies, 4) if b != body][:3]
        records.append({"query": summary, "pos": [body], "neg": negatives})
    zh = [json.loads(line) for line in (HERE / "zh_seed.jsonl").read_text(encoding="utf-8").splitlines() if line]
    zh_pos = [r["pos"][0] for r in zh]
    for record in zh:
        record["neg"] = [p for p in rng.sample(zh_pos, 4) if p not in record["pos"]][:3]
    records += zh
    rng.shuffle(records)
    OUT.mkdir(parents=True, exist_ok=True)
    target = OUT / "train.jsonl.gz"
    with gzip.GzipFile(target, "wb", mtime=0) as gz:
        for record in records:
            gz.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
    print(f"{len(records)} records ({len(zh)} Chinese) -> {target} (Python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
