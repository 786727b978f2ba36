"""Write constraints.txt: the exact installed version of every distribution that backfill[book,dev,lab,sweep]
pulls in (the closure of pyproject's requirements over this environment's metadata). `make constraints`.

Usage: python scripts/constraints.py [OUT]   (default: constraints.txt beside pyproject.toml)
"""
from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("book", "dev", "lab", "sweep")
HEADER = f"""\
# Exact versions that CI tested: every distribution that backfill[{','.join(EXTRAS)}] pulls in, from the
# environment it passed in. The ranges live in pyproject.toml (the one dependency list); `make install`
# runs pip install -c constraints.txt -e ".[{','.join(EXTRAS)}]". After changing pyproject.toml, install and
# regenerate this file from the current .venv with `make constraints` (python scripts/constraints.py).
# Local version labels are dropped (torch==2.13.0, not +cpu) so that a GPU box still takes its CUDA wheel.
"""


def closure(root: str = "backfill", extras=EXTRAS) -> dict[str, str]:
    """{canonical name: installed version} of every distribution `root[extras]` requires, transitively,
    under this interpreter's markers; `root` itself excluded."""
    versions, done = {}, {}                 # done: name -> extras already expanded
    todo = [(root, frozenset(extras), None)]
    while todo:
        name, ex, parent = todo.pop()
        key = canonicalize_name(name)
        if key in done and ex <= done[key]:
            continue
        done[key] = done.get(key, frozenset()) | ex
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            sys.exit(f"constraints: {name} (required by {parent or 'pyproject.toml'}) is not installed; "
                     f"run `make install` first")
        versions[key] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ex | {""}):
                todo.append((req.name, frozenset(req.extras), name))
    versions.pop(canonicalize_name(root), None)
    return versions


def main(out: str | None = None) -> int:
    out = Path(out) if out else ROOT / "constraints.txt"
    lines = [f"{k}=={v.split('+')[0]}" for k, v in sorted(closure().items())]
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(HEADER + "\n".join(lines) + "\n")
    os.replace(tmp, out)
    print(f"constraints: {len(lines)} pins written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
