"""A retrieval data set from the man pages installed on this machine (the quality benchmark's data).

Each page gives one pair: its NAME line's description (``ls \\- list directory contents`` → "list
directory contents") as the query and the first words of its DESCRIPTION section as the passage.
The text is the page's own troff source with the markup stripped (no ``man`` process per page).
Pages whose description or passage repeats an earlier one are dropped, so every query has exactly
one relevant passage. Which pages are test, train or corpus-only is a fixed, seeded shuffle of the
sorted file list: the split does not move with the benchmark's seeds.

The pages are those of a fixed list of Debian packages (``PACKAGES``, as ``dpkg-query -L`` lists their files), not
every page under ``/usr/share/man``: which other software a machine has (Docker, systemd, git, a cloud
CLI) would otherwise change the split, and figures from two machines would not be comparable. The
packages' versions and a sha256 over the pages used go into the returned sizes, so a results file
names the exact split it was measured on.

Nothing here comes from the shipped example data (Python docstrings), so the benchmark is held out
from it. ``python bench/manpages.py OUT`` writes the files and prints the counts.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAN_ROOT = Path("/usr/share/man")
#: The Debian packages whose pages make the benchmark (``apt-get install`` them): the C library's and
#: system calls' pages, OpenSSL's and X11's API pages, and the commands of a Debian development machine.
#: 2,920 usable pages with Debian 12's versions (1,740 from the first four alone: too few for 2,500).
PACKAGES = ("manpages", "manpages-dev", "libssl-doc", "libx11-doc", "libxt-dev", "libxext-dev", "libpam-modules",
            "openssl", "git-man", "systemd", "iproute2", "coreutils", "util-linux", "procps", "passwd", "e2fsprogs",
            "perl", "dpkg", "dpkg-dev", "apt", "man-db", "groff-base", "ncurses-bin", "binutils-common", "gettext",
            "iptables", "net-tools", "x11-utils", "docker.io")
SECTIONS = ("man1", "man2", "man3", "man5", "man7", "man8")
SPLIT_SEED = 20  # fixed: the split is part of the benchmark's definition, not of a run
PASSAGE_WORDS = 120
MIN_QUERY_WORDS = 3
MIN_PASSAGE_WORDS = 20
#: Pages not from Debian's archive (Google's gcloud CLI ships ~16,000 near-identical ones on some machines).
EXCLUDED = ("gcloud", "bq.", "gsutil.")

_FONT = re.compile(r"\\f(\[[^\]]*\]|\(..|.)")
_SIZE = re.compile(r"\\s[+-]?\d+")
_MOTION = re.compile(r"\\[hvwlLDbxoZ]'[^']*'|\\n(\(..|\[[^\]]*\]|.)|\\k.")
_NAMED = {"aq": "'", "dq": '"', "lq": '"', "rq": '"', "oq": "'", "cq": "'", "em": "-", "en": "-", "hy": "-",
          "bu": "*", "co": "(c)", "rg": "(R)", "mu": "x", "<=": "<=", ">=": ">=", "->": "->", "ti": "~", "ha": "^"}
_SPECIAL = re.compile(r"\\\((..)|\\\[([^\]]*)\]")
_STRING = re.compile(r"\\\*(\(..|\[[^\]]*\]|.)")
_TEXT_MACROS = {"B", "I", "SM", "SB"}
_ALTERNATING = {"BR", "RB", "IR", "RI", "BI", "IB"}


@dataclass(frozen=True)
class Page:
    path: str
    query: str
    passage: str


def clean(text: str) -> str:
    """One line of troff text without fonts, sizes and escapes."""
    text = _FONT.sub("", text)
    text = _SIZE.sub("", text)
    text = _MOTION.sub("", text)
    text = _SPECIAL.sub(lambda m: _NAMED.get(m.group(1) or m.group(2) or "", ""), text)
    text = _STRING.sub("", text)
    for escape, plain in (("\\-", "-"), ("\\e", "\\"), ("\\&", ""), ("\\|", ""), ("\\^", ""), ("\\c", ""),
                          ("\\ ", " "), ("\\~", " "), ("\\0", " "), ("\\/", ""), ("\\,", ""), ("\\:", "")):
        text = text.replace(escape, plain)
    return re.sub(r"\s+", " ", text).strip()


def _macro_text(line: str) -> str | None:
    """The text a request line puts on the page (``.B ls`` → "ls"); None for layout requests."""
    name, _, rest = line[1:].strip().partition(" ")
    if name in _TEXT_MACROS:
        return clean(rest.strip().strip('"'))
    if name in _ALTERNATING:
        parts = re.findall(r'"[^"]*"|\S+', rest)
        return clean("".join(p.strip('"') for p in parts))
    return None


def sections(source: str) -> dict[str, list[str]]:
    """Section name → its text lines (markup stripped), for a man(7) page."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in source.splitlines():
        if raw.startswith((".\\\"", "'\\\"", '.\\"')):
            continue
        if raw.startswith(".SH"):
            title = clean(raw[3:].strip().strip('"')).upper()
            current = out.setdefault(title, [])
            continue
        if current is None:
            continue
        if raw.startswith((".", "'")):
            text = _macro_text(raw)
            if text:
                current.append(text)
            continue
        text = clean(raw)
        if text:
            current.append(text)
    return out


def parse(path: Path) -> Page | None:
    """The page's (query, passage), or None when it has no usable NAME description or DESCRIPTION."""
    try:
        source = gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace")
    except (OSError, EOFError):
        return None
    if source.lstrip().startswith(".so "):
        return None  # a redirect to another page
    parts = sections(source)
    name = " ".join(parts.get("NAME", []))
    _, dash, description = name.partition(" - ")
    query = description.strip().rstrip(".")
    words = " ".join(parts.get("DESCRIPTION", [])).split()
    if not dash or len(query.split()) < MIN_QUERY_WORDS or len(words) < MIN_PASSAGE_WORDS:
        return None
    return Page(str(path), query, " ".join(words[:PASSAGE_WORDS]))


def package_files(packages: tuple[str, ...] = PACKAGES, root: Path = MAN_ROOT) -> list[Path]:
    """The gzipped pages of ``SECTIONS`` under ``root`` that ``packages`` install, sorted by path.

    Raises:
        SystemExit: a package is not installed (``dpkg-query`` names it).
    """
    # One query for all: dpkg-query lists every installed package's files and fails naming any that is not.
    listed = subprocess.run(["dpkg-query", "-L", *packages], capture_output=True, text=True)
    if listed.returncode != 0:
        raise SystemExit(f"the benchmark's man pages come from {' '.join(packages)}: apt-get install them "
                         f"({listed.stderr.strip()})")
    files = {path for path in map(Path, listed.stdout.splitlines())
             if path.suffix == ".gz" and path.parent.parent == root and path.parent.name in SECTIONS}
    return sorted(files)


def pages(files: list[Path]) -> Iterator[Page]:
    """Every usable page of ``files``, in their order, each query and each passage seen once."""
    seen_queries: set[str] = set()
    seen_passages: set[str] = set()
    for path in files:
        if path.name.startswith(EXCLUDED):
            continue
        page = parse(path)
        if page is None:
            continue
        q, p = page.query.lower(), page.passage.lower()
        if q in seen_queries or p in seen_passages:
            continue
        seen_queries.add(q)
        seen_passages.add(p)
        yield page


def installed_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """``{package: version}`` as dpkg has them installed."""
    shown = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\\t${Version}\\n", *packages],
                           capture_output=True, text=True, check=True)
    return dict(line.split("\t", 1) for line in shown.stdout.splitlines() if line)


def build(out: Path, *, train: int, test: int, corpus: int, packages: tuple[str, ...] = PACKAGES,
          root: Path = MAN_ROOT) -> dict[str, object]:
    """Write the benchmark's files under ``out``; returns their sizes, the packages' versions and
    ``pages_sha256`` (over every usable page's path, query and passage, in split order).

    - ``train.jsonl``: ``{"query", "pos"}`` (no negatives: each system finds its own);
    - ``pool.jsonl``: the mining corpus ``{"text"}``: train passages plus corpus-only pages, never a
      test passage (FlagEmbedding's ``candidate_pool`` format);
    - ``eval/corpus.jsonl`` ``{"id", "text"}`` (every passage: test, train, corpus-only) and
      ``eval/queries.jsonl`` ``{"id", "text", "relevant"}`` (the test queries).

    Raises:
        SystemExit: a package is missing, or fewer usable pages than asked for.
    """
    found = list(pages(package_files(packages, root)))
    random.Random(SPLIT_SEED).shuffle(found)
    need = train + test
    if len(found) < need:
        raise SystemExit(f"only {len(found)} usable man pages in {' '.join(packages)}, need {need}: "
                         "ask for fewer (--train, --test)")
    test_pages, train_pages = found[:test], found[test:need]
    extra = found[need:need + max(0, corpus - need)]
    (out / "eval").mkdir(parents=True, exist_ok=True)
    _write(out / "train.jsonl", ({"query": p.query, "pos": [p.passage]} for p in train_pages))
    _write(out / "pool.jsonl", ({"text": p.passage} for p in (*train_pages, *extra)))
    everything = [*test_pages, *train_pages, *extra]
    _write(out / "eval" / "corpus.jsonl", ({"id": f"d{i}", "text": p.passage} for i, p in enumerate(everything)))
    _write(out / "eval" / "queries.jsonl", ({"id": f"q{i}", "text": p.query, "relevant": {f"d{i}": 1}}
                                            for i, p in enumerate(test_pages)))
    digest = hashlib.sha256()
    for page in found:
        digest.update(json.dumps([page.path, page.query, page.passage], ensure_ascii=False).encode() + b"\n")
    return {"usable_pages": len(found), "train": len(train_pages), "test_queries": len(test_pages),
            "pool": len(train_pages) + len(extra), "eval_corpus": len(everything),
            "packages": installed_versions(packages), "pages_sha256": digest.hexdigest()}


def _write(path: Path, rows: Iterator[dict[str, object]]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "manpages-data")
    print(json.dumps(build(target, train=2000, test=500, corpus=4000), indent=1))
