"""What a run writes: the run directory, its params.yaml with provenance, metrics.json, atomic files, the
run lock, and the keys (code and params fingerprints) that tell current results from stale ones.

`open_run` is what every notebook calls first; training and generation write through these functions;
`pipeline` executes the notebooks and builds the book on top of them.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import subprocess
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
PACKAGES = ["torch", "numpy", "pandas", "scipy", "statsmodels", "arch", "papermill", "jupyter-book",
            "myst-nb", "plotly", "matplotlib", "ray"]


# --- atomic files ------------------------------------------------------------------------------

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path):
    """A temporary path beside `path` to write to; renamed onto `path` when the block ends without an error, removed
    otherwise: readers never see half a file (for writers that want a file name, e.g. netCDF)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)              # mkstemp makes 0600; give files the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path, payload: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def jsonable(o):
    if isinstance(o, dict):
        return {str(k): jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return jsonable(o.tolist())
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


BOOKKEEPING = ("status", "run_state", "profile", "writers")    # metrics.json sections the pipeline itself keeps
BY_HAND = "by hand"          # the writer of a section written outside `backfill run` (a notebook run in Jupyter)


def update_metrics(run_dir, **sections) -> dict:
    """Merge top-level sections into run_dir/metrics.json (atomic); returns the whole document.

    Each result section records its writers, {section: {notebook: key}}: the notebook and key that `backfill run`
    hands its kernel (BACKFILL_NOTEBOOK, BACKFILL_NOTEBOOK_KEY), or BY_HAND. A run is current only when every
    writer of every section carries its notebook's current key (`stale_sections`)."""
    m = read_metrics(run_dir)
    m.update(jsonable(sections))
    results = [k for k in sections if k not in BOOKKEEPING]
    if results:
        nb, key = os.environ.get("BACKFILL_NOTEBOOK", BY_HAND), os.environ.get("BACKFILL_NOTEBOOK_KEY")
        writers = m.setdefault("writers", {})
        for k in results:
            writers.setdefault(k, {})[nb] = key
    atomic_write_text(Path(run_dir) / "metrics.json", json.dumps(m, indent=2, sort_keys=True) + "\n")
    return m


def stale_sections(m: dict, keys: dict) -> list[str]:
    """Result sections of metrics.json `m` with a writer that is not a notebook with its current key in `keys`
    ({notebook: key}): written by hand, by an older version of a notebook, or under other params."""
    return sorted(sec for sec, ws in m.get("writers", {}).items() if sec in m
                  and any(nb not in keys or key != keys[nb] for nb, key in ws.items()))


def forget_writer(run_dir, notebook: str) -> None:
    """Before `notebook` runs again: drop it from every section's writers, and drop the sections it alone wrote
    (if it still writes them, it writes them anew; if it fails, no old numbers are left behind)."""
    m = read_metrics(run_dir)
    writers = m.get("writers", {})
    for sec in list(writers):
        writers[sec].pop(notebook, None)
        if not writers[sec]:
            del writers[sec]
            m.pop(sec, None)
    atomic_write_text(Path(run_dir) / "metrics.json", json.dumps(m, indent=2, sort_keys=True) + "\n")


def set_status(run_dir, name, state, **extra):
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
TRAINING_CODE = ("data.py", "embedded_data.py", "model.py", "rollout.py", "phases.py", "checkpoint.py", "train.py")   # what a checkpoint depends on


ORCHESTRATION = ("__main__.py", "pipeline.py", "compare.py", "bench.py", "record.py",
                 "sweep")   # modules and packages (sweep/) that run notebooks or read what they wrote; none runs in one


def key_modules() -> list[Path]:
    """The source files of the notebooks' code key, sorted: every .py file under lib/backfill/ but the modules and
    packages of ORCHESTRATION."""
    return [f for f in sorted(LIB.rglob("*.py")) if f.relative_to(LIB).parts[0] not in ORCHESTRATION]


def code_fingerprint(files=None) -> str:
    """Hash of the package's source that the notebooks run (`key_modules`), or of the named files: editing it changes
    every notebook's key, editing the training code (TRAINING_CODE) changes the checkpoints' keys too. The
    orchestration modules are left out so that, e.g., editing the sweep code does not re-run finished trials; tests
    check that no notebook or other module imports them."""
    h = hashlib.sha256()
    for f in key_modules() if files is None else [LIB / f for f in files]:
        h.update(f.relative_to(LIB).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def params_hash(p: dict, sections=None, data_fingerprint: str | None = None) -> str:
    """Hash of the params (or of some sections: checkpoints only depend on TRAINING_SECTIONS, so
    editing a gate threshold re-runs notebooks without retraining) and of the data's fingerprint, so
    that changed data invalidates finished notebooks and checkpoints."""
    body = {k: v for k, v in p.items() if k != "provenance" and (sections is None or k in sections)}
    body["_data_fingerprint"] = data_fingerprint
    return hashlib.sha256(json.dumps(jsonable(body), sort_keys=True).encode()).hexdigest()[:16]


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


class RunDirError(ValueError):
    """A run directory that cannot be used; the message names it in one line."""


def make_run_dir(run_dir, subs=("notebooks",)) -> Path:
    """Create run_dir and its `subs`, refusing a directory that would overwrite the repository's sources (its root,
    notebooks/ or any folder above it: executed copies go to <run_dir>/notebooks/, and a failure sets them aside
    to notebooks/stale/), a file, and a path that cannot be created (under a file, read-only). Returns it resolved."""
    run_dir, src = Path(run_dir).resolve(), (ROOT / "notebooks").resolve()
    if run_dir == src or run_dir in src.parents:
        raise RunDirError(f"run directory {run_dir} is or contains the repository's notebooks/ (the executed copies "
                          f"would overwrite the sources); use runs/<profile> or another --run-dir")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} is a file, not a directory")
    try:
        for sub in ("", *subs):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"cannot create run directory {run_dir}: {e.strerror or type(e).__name__}") from None
    return run_dir


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
    atomic_write_text(path, yaml.safe_dump(jsonable(record), sort_keys=False))
    return path


def open_run(params_path, run_dir=None) -> Run:
    """Load and validate params and data, create the run directory, record params + provenance. Given a
    run's own params.yaml (what `run` hands the notebooks), it keeps the recorded source and overrides."""
    p = _params.load(params_path)
    ds = _data.load_for(p)
    new = not Path(run_dir or default_run_dir(p)).exists()
    run_dir = make_run_dir(run_dir or default_run_dir(p), ("notebooks", "checkpoints", "logs", "backfill"))
    prev = p.get("provenance") or {}
    record_params(run_dir, p, ds, prev.get("params_source") or Path(params_path).resolve(),
                  prev.get("overrides") or [])
    if "profile" not in read_metrics(run_dir):
        update_metrics(run_dir, profile=p["profile"])
    if new and show_progress():          # a notebook opened by hand: say where its results go
        print(f"created the run directory {shown(run_dir)}: this notebook writes its results there "
              f"({run_command(run_dir)} runs every notebook into it)")
    seed_everything(p["seed"])
    return Run(p, ds, run_dir, _data.splits(ds, p))


def shown(path) -> str:
    """A path as the user would type it: relative to the repository when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run_command(run_dir, *args) -> str:
    """The `python -m backfill run` command of a run as its params.yaml records it (params file, --run-dir unless it
    is the default, --set overrides), with `args` added: what resumes the run, or runs one of its notebooks."""
    import shlex
    run_dir = Path(run_dir).resolve()
    rec = yaml.safe_load((run_dir / "params.yaml").read_text()) if (run_dir / "params.yaml").is_file() else None
    rec = rec if isinstance(rec, dict) else {}
    prov = rec.get("provenance") or {}
    src = prov.get("params_source")
    cmd = ["python", "-m", "backfill", "run", shown(src) if src else "PARAMS.yaml", *args]
    if run_dir != ROOT / "runs" / str(rec.get("profile")):
        cmd += ["--run-dir", shown(run_dir)]
    for o in prov.get("overrides") or []:
        cmd += ["--set", o]
    return " ".join(map(shlex.quote, cmd))


def run_first(run_dir, notebook: str) -> str:
    """'run notebook NN first (the command)': with --only NN when every notebook before it finished in this run
    directory, else the whole run (it skips what finished)."""
    nn = int(notebook[:2])
    done = {k[:2] for k, s in read_metrics(run_dir).get("status", {}).items() if s.get("state") == "ok"}
    if all(f"{i:02d}" in done for i in range(1, nn)):
        return f"run notebook {notebook} first ({run_command(run_dir, '--only', notebook[:2])})"
    return f"run notebook {notebook} and the ones before it first ({run_command(run_dir)})"


class NotYetRun(RuntimeError):
    """A result a notebook needs that an earlier notebook has not written (a notebook opened by hand too early)."""


def require(run: Run, section: str, notebook: str):
    """run.metrics()[section], or NotYetRun in one line naming the notebook that writes it and the command that runs
    it: a notebook opened by hand before the one it reads from ran says what to run, not KeyError."""
    m = run.metrics()
    if section not in m:
        raise NotYetRun(f"{shown(run.run_dir)} has no '{section}' section: {run_first(run.run_dir, notebook)}")
    return m[section]


def show_progress() -> bool:
    """Progress bars in interactive sessions; off in batch runs (their text would clutter the book)."""
    return os.environ.get("BACKFILL_BATCH") != "1"


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
