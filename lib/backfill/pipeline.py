"""Executing a run's notebooks in order (papermill) and building its book (Jupyter Book).

A notebook is skipped when it finished under the same key: params, data, the package's code and its own code
cells. What a run writes (run directory, metrics.json, locks) lives in `rundir`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

from . import data as _data
from . import params as _params
from .rundir import (BY_HAND, ROOT, atomic_write_text, code_fingerprint, default_run_dir, forget_writer, locked,
                     make_run_dir, params_hash, read_metrics, record_params, run_command, run_state, set_status,
                     stale_sections, update_metrics)

NOTEBOOKS = ["01_data_autocorrelation", "02_phase1_teacher_forcing", "03_phase2_multihorizon",
             "04_phase3_ar_h60", "05_phase4_ar_h90", "06_gates", "07_generate_6month",
             "08_generate_1year", "09_evaluation"]


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


# --- executing notebooks -----------------------------------------------------------------------

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


def run(params_path, start=None, only=None, force=False, run_dir=None, overrides=(), log=print,
        on_notebook=None, checkpoint=None) -> int:
    """Execute the notebooks in order with papermill; 0 on success, 1 when a notebook failed.

    `overrides` are `--set` 'KEY=VALUE' strings applied on top of the params file. The notebooks get
    run_dir/params.yaml, the merged params with the overrides (papermill passes only a path). Finished
    notebooks (status ok, same key: params, data, the package's code, the notebook's own code cells and the
    key of the notebook before it) are skipped unless `force`. The run directory is locked while it runs. A
    failing notebook stops the run, is saved as NN.failed.ipynb and is marked failed (with its cell) in
    metrics.json. `on_notebook(name, metrics)` is called after each notebook that is done (run or skipped), with
    the run's metrics.json as it then stands: how a sweep reports each phase to its scheduler. `checkpoint` (a
    record directory, `record.keep`) puts the record's phase checkpoints in the run and starts at notebook 06
    (`start` may be later); a record whose model does not fit the params is refused before anything is written."""
    params_path = Path(params_path).resolve()
    p = _params.load(params_path, overrides)   # bad params or --set fail here, before anything is written
    os.environ["BACKFILL_BATCH"] = "1"     # inherited by the kernels papermill starts
    ds = _data.load_for(p)                 # so does bad data
    if checkpoint is not None:
        from . import record
        first = NOTEBOOKS.index(FROM_RECORD)
        if only is not None or (start is not None and NOTEBOOKS.index(select(NOTEBOOKS, start)[0]) < first):
            raise record.RecordError(f"--checkpoint replaces training: start at notebook {FROM_RECORD[:2]} or later "
                                     f"(--from {FROM_RECORD[:2]}), not {only or start}")
        start = start or FROM_RECORD
        checked = record.check(checkpoint, p, ds.grid)
    run_dir = make_run_dir(run_dir or default_run_dir(p))   # not the sources' folder, not a file
    with locked(run_dir):
        if checkpoint is not None and record.seed_run(checkpoint, p, ds, run_dir, force, log, checked):
            force = True                  # other checkpoints: what ran from the old ones runs again
        try:
            return _run_locked(p, ds, params_path, run_dir, start, only, force, overrides, log, on_notebook)
        except KeyboardInterrupt:          # Ctrl-C: interrupted, not failed; the same command resumes the run
            update_metrics(run_dir, run_state="interrupted")
            raise


def _run_locked(p, ds, params_path, run_dir, start, only, force, overrides, log, on_notebook=None) -> int:
    h = params_hash(p, data_fingerprint=_data.fingerprint(ds))
    keys = notebook_keys(h)
    todo = select(available_notebooks(), start, only)
    resolved = record_params(run_dir, p, ds, params_path, overrides)   # also restores it after a hand-run notebook
    for tmp in (run_dir / "notebooks").glob(".*.running.ipynb"):      # left by a killed run (we hold the lock)
        tmp.unlink(missing_ok=True)
    status = read_metrics(run_dir).get("status", {})
    hand = [sec for sec, ws in read_metrics(run_dir).get("writers", {}).items() if BY_HAND in ws]
    if hand:     # a notebook ran by hand in this directory: which one is unknown, so none is trusted
        log(f"metrics.json has sections written by a notebook run by hand ({', '.join(hand)}): every notebook "
            f"runs again so that no result is mixed")
        forget_writer(run_dir, BY_HAND)
        status = {n: {"state": "stale"} for n in status}
        update_metrics(run_dir, status=status)
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
        set_status(run_dir, name, "running", params_hash=h, key=keys[name])
        forget_writer(run_dir, name)
        t0 = time.time()
        tmp = out.with_name(f".{name}.running.ipynb")
        try:
            with _kernel_env(BACKFILL_NOTEBOOK=name, BACKFILL_NOTEBOOK_KEY=keys[name]):   # the sections' writer
                execute_notebook(ROOT / "notebooks" / f"{name}.ipynb", tmp,
                                 {"params_path": str(resolved), "run_dir": str(run_dir)})
        except BaseException as e:  # papermill's execution error, a dead kernel, or Ctrl-C
            failed = out.with_name(f"{name}.failed.ipynb")
            _set_aside([n for n in NOTEBOOKS[NOTEBOOKS.index(name):]], run_dir)
            if isinstance(e, KeyboardInterrupt):       # not a failure of the notebook: no .failed copy
                tmp.unlink(missing_ok=True)
                set_status(run_dir, name, "interrupted", params_hash=h, key=keys[name],
                           seconds=round(time.time() - t0, 1))
                log(f"[{i}/{len(todo)}] {name}: interrupted")
                raise
            if tmp.exists():
                os.replace(tmp, failed)
            cell = getattr(e, "exec_count", None) or getattr(e, "cell_index", None)
            err = f"{getattr(e, 'ename', type(e).__name__)}: {getattr(e, 'evalue', str(e))}".strip()
            err = err.splitlines()[0] if err else type(e).__name__
            set_status(run_dir, name, "failed", cell=cell, error=err, params_hash=h, key=keys[name],
                        seconds=round(time.time() - t0, 1))
            update_metrics(run_dir, run_state="failed")
            log(f"[{i}/{len(todo)}] {name}: FAILED in cell {cell}: {err}\n  see {failed}")
            if not isinstance(e, Exception):
                raise
            return 1
        os.replace(tmp, out)
        _clear_superseded(name, run_dir)
        set_status(run_dir, name, "ok", params_hash=h, key=keys[name], seconds=round(time.time() - t0, 1))
        log(f"[{i}/{len(todo)}] {name}: ok ({time.time() - t0:.1f} s)")
        if on_notebook:
            on_notebook(name, read_metrics(run_dir))
    status = read_metrics(run_dir).get("status", {})
    for name in available_notebooks():
        status.setdefault(name, {"state": "skipped"})
    current = all(s["state"] == "ok" and s.get("key") == keys.get(n) for n, s in status.items()) and \
        not stale_sections(read_metrics(run_dir), keys)
    update_metrics(run_dir, status=status, run_state="ok" if current else "partial")
    return 0


FROM_RECORD = "06_gates"      # the first notebook of a run seeded from a record: everything before it is training
TRAINING_NOTEBOOKS = tuple(NOTEBOOKS[:NOTEBOOKS.index(FROM_RECORD)])   # the data chapter and the four phases


KERNEL_START_TRIES = 3
KERNEL_START_TIMEOUT = 180     # s for a kernel to reply at all (papermill's default, 60, failed a sweep trial on a
# loaded 2-core machine, every process starting torch at once)
KERNEL_NOT_STARTED = ("before replying to kernel_info", "Kernel didn't respond in")   # no cell ran: safe to retry
KERNEL_QUIET = ["--IPKernelApp.log_level=CRITICAL"]   # the kernel's own log on our stderr is noise: a TCP warning
# at every start, a ZMQ traceback when Ctrl-C shuts it down mid-cell (cell errors reach papermill, not this log)


class QuietDeadKernel:
    """A filter for the `asyncio` logger: when Ctrl-C stops a notebook mid-cell, nbclient's polling task ends in
    DeadKernelError and asyncio logs "Task exception was never retrieved" with its traceback when the task is
    collected (how soon depends on the load). The run already reads `interrupted` and says so in one line; that
    traceback is noise. Every other asyncio record passes."""

    @staticmethod
    def filter(record) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (exc is not None and type(exc).__name__ == "DeadKernelError")


def quiet_dead_kernels() -> None:
    """Install QuietDeadKernel on the `asyncio` logger (once)."""
    import logging
    log = logging.getLogger("asyncio")
    if not any(isinstance(f, QuietDeadKernel) for f in log.filters):
        log.addFilter(QuietDeadKernel())


def execute_notebook(src, dest, parameters: dict, tries: int = KERNEL_START_TRIES) -> None:
    """papermill.execute_notebook with the notebook's directory as cwd, and a retry when the kernel never started:
    kernels started at the same moment by several processes (the trials of a sweep) can race for the same free TCP
    ports, and the loser dies before replying to kernel_info; on a loaded machine a kernel can also take longer than
    KERNEL_START_TIMEOUT to reply. No cell ran, so a retry is safe."""
    import random
    import papermill as pm
    quiet_dead_kernels()
    for attempt in range(1, tries + 1):
        try:
            pm.execute_notebook(str(src), str(dest), parameters=parameters, cwd=str(Path(src).parent),
                                progress_bar=False, kernel_name="python3", extra_arguments=KERNEL_QUIET,
                                start_timeout=KERNEL_START_TIMEOUT)
            return
        except RuntimeError as e:
            if not any(m in str(e) for m in KERNEL_NOT_STARTED) or attempt == tries:
                raise
            time.sleep(0.5 + random.random())      # out of step with the process it raced


@contextmanager
def _kernel_env(**env):
    """Environment variables for the kernels started inside the block (they inherit this process's)."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


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


def _clear_superseded(name: str, run_dir: Path) -> None:
    """After `name` succeeded: its .failed copy and its set-aside copy in notebooks/stale/ are superseded; stale/
    goes once it is empty."""
    nb = run_dir / "notebooks"
    (nb / f"{name}.failed.ipynb").unlink(missing_ok=True)
    (nb / "stale" / f"{name}.ipynb").unlink(missing_ok=True)
    if (nb / "stale").is_dir() and not any((nb / "stale").iterdir()):
        (nb / "stale").rmdir()


# --- the book ----------------------------------------------------------------------------------

def build_book(run_dir, log=print, compare=(), sweep=None) -> Path:
    """Stage the book pages and config beside the run's executed notebooks and build the HTML. With `compare`
    (other run directories), the book gets a comparison page: this run against each of them (`compare.table`);
    with `sweep` (a sweep directory), the sweep's executed chapter (10_sweep, or 11_plan_claims for a sweep with
    claims) as its last part. Given a sweep directory itself, the book is that chapter alone."""
    run_dir = Path(run_dir).resolve()
    if (run_dir / "sweep.json").exists() and not (run_dir / "metrics.json").exists():
        chapter = _sweep_chapter(run_dir)    # the trials are run directories with books of their own
        title = f"Sweep {json.loads((run_dir / 'sweep.json').read_text()).get('name', run_dir.name)}"
        return _build(run_dir, {"format": "jb-book", "root": chapter.stem}, log, title=title, exclude=["*/**"])
    chapter = _sweep_chapter(sweep) if sweep else None     # checked before anything of the old book is removed
    compare_md = _compare_page(run_dir, compare) if compare else None
    m = read_metrics(run_dir)
    state = run_state(run_dir)
    if state == "failed":
        failed = [n for n, s in m.get("status", {}).items() if s.get("state") == "failed"]
        raise SystemExit(f"backfill: the run in {run_dir} failed ({', '.join(failed)}); fix it and re-run "
                         f"before building its book")
    if state in ("running", "interrupted"):
        raise SystemExit(f"backfill: the run in {run_dir} is {state}; " + (
            "wait for it to finish before building its book" if state == "running" else
            f"re-run it to resume (finished notebooks and checkpoints are kept) before building its book: "
            f"{run_command(run_dir)}"))
    stale = _stale_notebooks(run_dir, m)
    if stale:
        raise SystemExit(f"backfill: {', '.join(stale)} in {run_dir} ran with other params or code than the "
                         f"current ones; re-run the run before building its book")
    sections = stale_sections(m, _current_keys(run_dir))
    if sections:
        raise SystemExit(f"backfill: metrics.json in {run_dir} has sections ({', '.join(sections)}) written by hand or "
                         f"by notebooks under other params or code; re-run the run before building its book")
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
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    for part in toc.get("parts", []):
        part["chapters"] = [c for c in part["chapters"]
                            if not c["file"].startswith("notebooks/") or Path(c["file"]).name in done]
    toc["parts"] = [pt for pt in toc.get("parts", []) if pt["chapters"]]
    from . import record
    record_md = record.page(run_dir)
    if record_md:                    # a run seeded from a record: what the record ran on opens the run's part
        atomic_write_text(run_dir / "book" / "record.md", record_md)
        run_part = next(pt for pt in toc["parts"] if pt["chapters"][0]["file"].startswith("notebooks/"))
        run_part["chapters"].insert(0, {"file": "book/record"})
    if compare_md:
        atomic_write_text(run_dir / "book" / "compare.md", compare_md)
        toc["parts"][0]["chapters"].append({"file": "book/compare"})
    if chapter:
        (run_dir / "sweep").mkdir(exist_ok=True)
        shutil.copy2(chapter, run_dir / "sweep" / chapter.name)
        toc["parts"].append({"caption": SWEEP_PARTS.get(chapter.stem, "Sweep"),
                             "chapters": [{"file": f"sweep/{chapter.stem}"}]})
    return _build(run_dir, toc, log)


SWEEP_PARTS = {"10_sweep": "Sweep", "11_plan_claims": "Does the plan's reasoning hold?"}   # chapter: its book part


def _sweep_chapter(sweep_dir) -> Path:
    """The executed sweep chapter of a sweep directory (what `backfill sweep` writes at its end): the one its
    sweep.json names (11_plan_claims for a sweep with claims, else 10_sweep)."""
    sweep_dir = Path(sweep_dir)
    info = sweep_dir / "sweep.json"
    try:
        name = json.loads(info.read_text()).get("chapter") if info.is_file() else None
    except ValueError:
        name = None
    chapter = sweep_dir / (name or "10_sweep.ipynb")
    if not chapter.exists():
        raise SystemExit(f"backfill: {sweep_dir} has no executed sweep chapter ({chapter.name}); run "
                         f"`python -m backfill sweep SWEEP.yaml` first")
    return chapter


def _build(run_dir: Path, toc: dict, log, title: str | None = None, exclude=()) -> Path:
    """Write the toc and config (the repository's, with another `title` and more `exclude` patterns if given)
    into run_dir and build the HTML there with Jupyter Book."""
    import plotly
    shutil.rmtree(run_dir / "_build", ignore_errors=True)
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    cfg["title"] = title or cfg["title"]
    cfg["exclude_patterns"] = [*cfg.get("exclude_patterns", []), *exclude]
    atomic_write_text(run_dir / "_config.yml", yaml.safe_dump(cfg, sort_keys=False))
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


def _compare_page(run_dir: Path, others) -> str:
    """The book's comparison page: `compare.table` of this run (the reference) and the others, as markdown."""
    from . import compare
    dirs = [run_dir, *map(Path, others)]
    df = compare.table(dirs)
    names = ", ".join(f"`{d}`" for d in dirs[1:])
    return (f"# Comparison with other runs\n\nThis run (first row) beside {names}: each run's profile, the params "
            f"that differ from this run's, its gate decisions and its headline rolling-origin scores, read from each "
            f"run's `metrics.json` (`python -m backfill compare` writes the same table).\n\n" + compare.to_markdown(df))


def _current_keys(run_dir: Path) -> dict:
    """{notebook: key} for the run's recorded params and data with today's code."""
    rec = yaml.safe_load((run_dir / "params.yaml").read_text()) if (run_dir / "params.yaml").exists() else {}
    h = (rec or {}).get("provenance", {}).get("params_hash")
    return notebook_keys(h) if h else {}


def _stale_notebooks(run_dir: Path, m: dict) -> list[str]:
    """Executed notebooks whose recorded key is not the key of the run's params and data with today's code."""
    keys = _current_keys(run_dir)
    return [n for n, s in m.get("status", {}).items()
            if s.get("state") == "ok" and (run_dir / "notebooks" / f"{n}.ipynb").exists() and s.get("key") != keys.get(n)]


def stale_parts(run_dir, m: dict) -> list[str]:
    """Executed notebooks and metrics.json sections of a run that do not carry the current key of its recorded params
    and data with today's code (a notebook run by hand rewrites params.yaml and writes sections by hand): what
    `book` refuses, and what `compare` reads as stale."""
    run_dir = Path(run_dir)
    return _stale_notebooks(run_dir, m) + stale_sections(m, _current_keys(run_dir))


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
