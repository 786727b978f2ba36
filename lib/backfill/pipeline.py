"""Runs: the run directory, provenance, metrics.json, executing the notebooks, building the book.

`open_run` is what every notebook calls first; `run` executes the notebooks with papermill in order;
`build_book` renders a run's executed notebooks plus the book pages into HTML.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from . import data as _data
from . import params as _params

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ["01_data_autocorrelation", "02_phase1_teacher_forcing", "03_phase2_multihorizon",
             "04_phase3_ar_h60", "05_phase4_ar_h90", "06_gates", "07_generate_6month",
             "08_generate_1year", "09_evaluation"]
PACKAGES = ["torch", "numpy", "pandas", "scipy", "statsmodels", "arch", "papermill", "jupyter-book",
            "myst-nb", "plotly", "matplotlib"]


# --- atomic files ------------------------------------------------------------------------------

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path, payload: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.chmod(tmp, 0o666 & ~_UMASK)              # mkstemp makes 0600; give files the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, (np.floating, float)):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


def read_metrics(run_dir) -> dict:
    path = Path(run_dir) / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}


def update_metrics(run_dir, **sections) -> dict:
    """Merge top-level sections into run_dir/metrics.json (atomic); returns the whole document."""
    m = read_metrics(run_dir)
    m.update(_jsonable(sections))
    atomic_write_text(Path(run_dir) / "metrics.json", json.dumps(m, indent=2, sort_keys=True) + "\n")
    return m


def _set_status(run_dir, name, state, **extra):
    status = read_metrics(run_dir).get("status", {})
    status[name] = {"state": state, **extra}
    update_metrics(run_dir, status=status)


# --- provenance ----------------------------------------------------------------------------------

def provenance() -> dict:
    """Git commit (with a dirty flag) and package versions: what a number in the book came from."""
    from importlib import metadata
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"git_commit": commit, "git_dirty": dirty, "python": platform.python_version(),
            "platform": platform.platform(), "packages": versions,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


TRAINING_SECTIONS = ("seed", "data", "model", "training")
LIB = Path(__file__).resolve().parent
TRAINING_CODE = ("data.py", "calibrated.py", "model.py", "rollout.py", "train.py")   # what a checkpoint depends on


def code_fingerprint(files=None) -> str:
    """Hash of the package's source (or of the named files of it): editing lib/ changes every notebook's key,
    editing the training code (TRAINING_CODE) changes the checkpoints' keys too."""
    h = hashlib.sha256()
    for f in sorted(LIB.glob("*.py")) if files is None else [LIB / f for f in files]:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def notebook_keys(p_hash: str, names=None, nb_dir=None, lib_fp: str | None = None) -> dict:
    """{notebook: key}: a notebook's key hashes the params and data (p_hash), the package's code, its own code
    cells and the key of the notebook before it, so that editing a notebook re-runs it and every later one."""
    import nbformat
    nb_dir = Path(nb_dir or ROOT / "notebooks")
    prev, out = hashlib.sha256(f"{p_hash}:{lib_fp or code_fingerprint()}".encode()).hexdigest()[:16], {}
    for name in names or NOTEBOOKS:
        path = nb_dir / f"{name}.ipynb"
        if not path.exists():
            continue
        cells = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        prev = out[name] = hashlib.sha256(json.dumps([prev, cells]).encode()).hexdigest()[:16]
    return out


def params_hash(p: dict, sections=None, data_fingerprint: str | None = None) -> str:
    """Hash of the params (or of some sections: checkpoints only depend on TRAINING_SECTIONS, so
    editing a gate threshold re-runs notebooks without retraining) and of the data's fingerprint, so
    that changed data invalidates finished notebooks and checkpoints."""
    body = {k: v for k, v in p.items() if k != "provenance" and (sections is None or k in sections)}
    body["_data_fingerprint"] = data_fingerprint
    return hashlib.sha256(json.dumps(_jsonable(body), sort_keys=True).encode()).hexdigest()[:16]


# --- a run, as notebooks see it ----------------------------------------------------------------

@dataclass
class Run:
    params: dict
    data: _data.Dataset
    run_dir: Path
    splits: dict          # name -> half-open day-index range

    def metrics(self) -> dict:
        return read_metrics(self.run_dir)

    def update_metrics(self, **sections) -> dict:
        return update_metrics(self.run_dir, **sections)


def default_run_dir(p: dict) -> Path:
    return ROOT / "runs" / p["profile"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch
        torch.manual_seed(seed)
    except ImportError:
        pass


def record_params(run_dir, p: dict, ds, source, overrides=()) -> Path:
    """Write run_dir/params.yaml: the merged params (bases and --set applied) with their provenance, the
    file they came from and the overrides. The notebooks of a `run` load this file."""
    fp = _data.fingerprint(ds)
    record = dict(p, provenance={**provenance(), "params_hash": params_hash(p, data_fingerprint=fp),
                                 "params_source": str(source), "overrides": list(overrides),
                                 "data_fingerprint": fp})
    path = Path(run_dir) / "params.yaml"
    atomic_write_text(path, yaml.safe_dump(_jsonable(record), sort_keys=False))
    return path


def open_run(params_path, run_dir=None) -> Run:
    """Load and validate params and data, create the run directory, record params + provenance. Given a
    run's own params.yaml (what `run` hands the notebooks), it keeps the recorded source and overrides."""
    p = _params.load(params_path)
    ds = _data.load_for(p)
    run_dir = Path(run_dir) if run_dir else default_run_dir(p)
    for sub in ("notebooks", "checkpoints", "logs", "backfill"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    prev = p.get("provenance") or {}
    record_params(run_dir, p, ds, prev.get("params_source") or Path(params_path).resolve(),
                  prev.get("overrides") or [])
    if "profile" not in read_metrics(run_dir):
        update_metrics(run_dir, profile=p["profile"])
    seed_everything(p["seed"])
    return Run(p, ds, run_dir, _data.splits(ds, p))


# --- executing notebooks -----------------------------------------------------------------------

def show_progress() -> bool:
    """Progress bars in interactive sessions; off in batch runs (their text would clutter the book)."""
    return os.environ.get("BACKFILL_BATCH") != "1"


def available_notebooks() -> list[str]:
    return [n for n in NOTEBOOKS if (ROOT / "notebooks" / f"{n}.ipynb").exists()]


def select(names: list[str], start: str | None = None, only: str | None = None) -> list[str]:
    """Notebooks from `start` on (or just `only`), given by number ('03') or full name."""
    def find(tag):
        hits = [n for n in names if n == tag or n.split("_")[0] == str(tag).zfill(2)]
        if not hits:
            raise SystemExit(f"backfill: no notebook '{tag}' (have: {', '.join(n[:2] for n in names)})")
        return names.index(hits[0])
    if only is not None:
        return [names[find(only)]]
    return names[find(start):] if start is not None else list(names)


class RunLocked(RuntimeError):
    """Another process is writing the run directory."""


@contextmanager
def locked(run_dir):
    """Hold run_dir/.lock (an flock, released by the OS if the process dies) while a run writes the directory; a
    second run gets RunLocked naming the holder."""
    import fcntl
    import socket
    path = Path(run_dir) / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise RunLocked(f"{run_dir} is being written by {holder}; wait for it to finish or use another --run-dir") \
            from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
    f.flush()
    try:
        yield
    finally:
        f.truncate(0)
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def is_locked(run_dir) -> bool:
    """True while some process holds run_dir/.lock."""
    try:
        with locked(run_dir):
            return False
    except RunLocked:
        return True


def run_state(run_dir) -> str | None:
    """The run's state as recorded, except that a run recorded as running whose process is gone (killed, the
    machine restarted) is 'interrupted'."""
    st = read_metrics(run_dir).get("run_state")
    return "interrupted" if st == "running" and not is_locked(run_dir) else st


def run(params_path, start=None, only=None, force=False, run_dir=None, overrides=(), log=print,
        on_notebook=None) -> int:
    """Execute the notebooks in order with papermill; 0 on success, 1 when a notebook failed.

    `overrides` are `--set` 'KEY=VALUE' strings applied on top of the params file. The notebooks get
    run_dir/params.yaml, the merged params with the overrides (papermill passes only a path). Finished
    notebooks (status ok, same key: params, data, the package's code, the notebook's own code cells and the
    key of the notebook before it) are skipped unless `force`. The run directory is locked while it runs. A
    failing notebook stops the run, is saved as NN.failed.ipynb and is marked failed (with its cell) in
    metrics.json. `on_notebook(name, metrics)` is called after each notebook that is done (run or skipped), with
    the run's metrics.json as it then stands: how a sweep reports each phase to its scheduler."""
    params_path = Path(params_path).resolve()
    p = _params.load(params_path, overrides)   # bad params or --set fail here, before anything is written
    os.environ["BACKFILL_BATCH"] = "1"     # inherited by the kernels papermill starts
    ds = _data.load_for(p)                 # so does bad data
    run_dir = Path(run_dir).resolve() if run_dir else default_run_dir(p)
    (run_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    with locked(run_dir):
        return _run_locked(p, ds, params_path, run_dir, start, only, force, overrides, log, on_notebook)


def _run_locked(p, ds, params_path, run_dir, start, only, force, overrides, log, on_notebook=None) -> int:
    import papermill as pm
    h = params_hash(p, data_fingerprint=_data.fingerprint(ds))
    keys = notebook_keys(h)
    todo = select(available_notebooks(), start, only)
    resolved = record_params(run_dir, p, ds, params_path, overrides)   # also restores it after a hand-run notebook
    status = read_metrics(run_dir).get("status", {})
    update_metrics(run_dir, profile=p["profile"], run_state="running")
    for i, name in enumerate(todo, 1):
        out = run_dir / "notebooks" / f"{name}.ipynb"
        st = status.get(name, {})
        if not force and st.get("state") == "ok" and st.get("key") == keys[name] and out.exists():
            log(f"[{i}/{len(todo)}] {name}: done before, skipped (use --force to re-run)")
            if on_notebook:
                on_notebook(name, read_metrics(run_dir))
            continue
        log(f"[{i}/{len(todo)}] {name}: running ...", )
        _set_status(run_dir, name, "running", params_hash=h, key=keys[name])
        t0 = time.time()
        tmp = out.with_name(f".{name}.running.ipynb")
        try:
            pm.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(tmp),
                                parameters={"params_path": str(resolved), "run_dir": str(run_dir)},
                                cwd=str(ROOT / "notebooks"), progress_bar=False, kernel_name="python3")
        except BaseException as e:  # papermill's execution error, a dead kernel, or Ctrl-C
            failed = out.with_name(f"{name}.failed.ipynb")
            if tmp.exists():
                os.replace(tmp, failed)
            _set_aside([n for n in NOTEBOOKS[NOTEBOOKS.index(name):]], run_dir)
            cell = getattr(e, "exec_count", None) or getattr(e, "cell_index", None)
            err = f"{getattr(e, 'ename', type(e).__name__)}: {getattr(e, 'evalue', str(e))}".strip()
            err = err.splitlines()[0] if err else type(e).__name__
            _set_status(run_dir, name, "failed", cell=cell, error=err, params_hash=h, key=keys[name],
                        seconds=round(time.time() - t0, 1))
            update_metrics(run_dir, run_state="failed")
            log(f"[{i}/{len(todo)}] {name}: FAILED in cell {cell}: {err}\n  see {failed}")
            if not isinstance(e, Exception):
                raise
            return 1
        os.replace(tmp, out)
        _set_status(run_dir, name, "ok", params_hash=h, key=keys[name], seconds=round(time.time() - t0, 1))
        log(f"[{i}/{len(todo)}] {name}: ok ({time.time() - t0:.1f} s)")
        if on_notebook:
            on_notebook(name, read_metrics(run_dir))
    status = read_metrics(run_dir).get("status", {})
    for name in available_notebooks():
        status.setdefault(name, {"state": "skipped"})
    current = all(s["state"] == "ok" and s.get("key") == keys.get(n) for n, s in status.items())
    update_metrics(run_dir, status=status, run_state="ok" if current else "partial")
    return 0


def _set_aside(names: list[str], run_dir: Path) -> None:
    """Move executed copies that no longer match the run (a failed notebook and those after it) to
    notebooks/stale/, and mark them, so that no book mixes them with the new results."""
    status = read_metrics(run_dir).get("status", {})
    for n in names:
        old = run_dir / "notebooks" / f"{n}.ipynb"
        if old.exists():
            (run_dir / "notebooks" / "stale").mkdir(exist_ok=True)
            os.replace(old, run_dir / "notebooks" / "stale" / old.name)
        if n in status and status[n].get("state") == "ok":
            status[n] = {"state": "stale"}
    update_metrics(run_dir, status=status)


# --- the book ----------------------------------------------------------------------------------

def build_book(run_dir, log=print) -> Path:
    """Stage the book pages and config beside the run's executed notebooks and build the HTML."""
    import plotly
    run_dir = Path(run_dir).resolve()
    m = read_metrics(run_dir)
    state = run_state(run_dir)
    if state == "failed":
        failed = [n for n, s in m.get("status", {}).items() if s.get("state") == "failed"]
        raise SystemExit(f"backfill: the run in {run_dir} failed ({', '.join(failed)}); fix it and re-run "
                         f"before building its book")
    if state in ("running", "interrupted"):
        raise SystemExit(f"backfill: the run in {run_dir} is {state}; " + (
            "wait for it to finish" if state == "running" else "re-run it (finished notebooks are kept)") +
            " before building its book")
    stale = _stale_notebooks(run_dir, m)
    if stale:
        raise SystemExit(f"backfill: {', '.join(stale)} in {run_dir} ran with other params or code than the "
                         f"current ones; re-run the run before building its book")
    done = [n for n in NOTEBOOKS if (run_dir / "notebooks" / f"{n}.ipynb").exists()
            and m.get("status", {}).get(n, {}).get("state", "ok") == "ok"]
    if not done:
        raise SystemExit(f"backfill: {run_dir} has no executed notebooks; run `python -m backfill run` first")
    shutil.rmtree(run_dir / "_build", ignore_errors=True)       # a fresh build: no stale pages
    shutil.copytree(ROOT / "book", run_dir / "book", dirs_exist_ok=True)
    if not (run_dir / "figures" / "headline.png").exists():       # no evaluation chapter: no headline figure
        summary = run_dir / "book" / "summary.md"
        text = summary.read_text()
        if "% headline-start" in text:
            head, rest = text.split("% headline-start", 1)
            atomic_write_text(summary, head + rest.split("% headline-end", 1)[1])
    shutil.copy2(ROOT / "_config.yml", run_dir / "_config.yml")
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    for part in toc.get("parts", []):
        part["chapters"] = [c for c in part["chapters"]
                            if not c["file"].startswith("notebooks/") or Path(c["file"]).name in done]
    toc["parts"] = [pt for pt in toc.get("parts", []) if pt["chapters"]]
    atomic_write_text(run_dir / "_toc.yml", yaml.safe_dump(toc, sort_keys=False))
    static = run_dir / "_static"
    static.mkdir(exist_ok=True)
    shutil.copy2(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", static / "plotly.min.js")
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(run_dir), "--path-output",
           str(run_dir), "--keep-going"]
    log("building the book: " + " ".join(cmd))
    res = subprocess.run(cmd, capture_output=True, text=True)
    (run_dir / "logs").mkdir(exist_ok=True)
    atomic_write_text(run_dir / "logs" / "book_build.log", res.stdout + res.stderr)
    index = run_dir / "_build" / "html" / "index.html"
    if res.returncode != 0 or not index.exists():
        raise SystemExit(f"backfill: the book build failed (see {run_dir / 'logs' / 'book_build.log'})")
    _dedupe_inline_scripts(run_dir / "_build" / "html")
    log(f"book: {index}")
    return index


def _stale_notebooks(run_dir: Path, m: dict) -> list[str]:
    """Executed notebooks whose recorded key is not the key of the run's params and data with today's code."""
    rec = yaml.safe_load((run_dir / "params.yaml").read_text()) if (run_dir / "params.yaml").exists() else {}
    h = (rec or {}).get("provenance", {}).get("params_hash")
    keys = notebook_keys(h) if h else {}
    return [n for n, s in m.get("status", {}).items()
            if s.get("state") == "ok" and (run_dir / "notebooks" / f"{n}.ipynb").exists() and s.get("key") != keys.get(n)]


def _dedupe_inline_scripts(html_dir: Path) -> None:
    """sphinx-thebe (pulled in by Jupyter Book 1) emits its inline `const THEBE_JS_URL = ...` script twice
    on this Sphinx version, a JavaScript error on every page; keep the first copy only."""
    for page in html_dir.rglob("*.html"):
        lines = page.read_text().splitlines(keepends=True)
        seen, out = set(), []
        for ln in lines:
            key = ln.strip()
            if key.startswith("<script>const THEBE_JS_URL"):
                if key in seen:
                    continue
                seen.add(key)
            out.append(ln)
        if len(out) != len(lines):
            page.write_text("".join(out))
