"""Command line: python -m backfill run PARAMS [--from NN] [--only NN] [--force] [--set KEY=VALUE ...] [--checkpoint RECORD]
| record RUN_DIR [--out DIR] | book RUN_DIR|SWEEP_DIR [--compare RUN_DIR...] [--sweep SWEEP_DIR] | bench | compare RUN_DIR... | sweep SWEEP.yaml [--address ADDR]"""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m backfill", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="execute the notebooks with papermill into runs/<profile>/")
    r.add_argument("params", help="params YAML, e.g. params/smoke.yaml")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--from", dest="start", metavar="NN", help="start at notebook NN")
    g.add_argument("--only", metavar="NN", help="run only notebook NN")
    r.add_argument("--force", action="store_true", help="re-run notebooks that finished before")
    r.add_argument("--run-dir", help="where the run goes (default runs/<profile>)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a param (dotted key, YAML value), e.g. --set model.kl_weight=0.5; repeatable")
    r.add_argument("--checkpoint", metavar="RECORD", help="generate and evaluate (notebooks 06 on) from a record's "
                   "checkpoints (results/<profile>, made by `record`) instead of training")
    rc = sub.add_parser("record", help="keep a finished full run (bench --full-run) as results of record")
    rc.add_argument("run_dir", help="the run directory, e.g. runs/full_run/full_working")
    rc.add_argument("--out", help="where the record goes (default results/<profile>)")
    b = sub.add_parser("book", help="build the Jupyter Book of a run")
    b.add_argument("run_dir")
    b.add_argument("--compare", nargs="+", default=[], metavar="RUN_DIR",
                   help="add a page comparing this run with these run directories")
    b.add_argument("--sweep", metavar="SWEEP_DIR", help="add a sweep's chapter (runs/sweeps/<name>) as the last part")
    be = sub.add_parser("bench", help="benchmark training and generation; writes JSON")
    be.add_argument("--params", default="params/full_working.yaml")
    be.add_argument("--out", default="runs/bench.json")
    be.add_argument("--steps", type=int, default=5, help="timed batches per phase")
    be.add_argument("--epochs", type=int, default=0, help="also time this many real epochs of phase 1")
    be.add_argument("--full-run", action="store_true",
                    help="train the whole curriculum (notebooks 01-05) on this device and write record.json")
    be.add_argument("--run-dir", help="with --full-run: where the run goes (default runs/full_run/<profile>)")
    c = sub.add_parser("compare", help="one table of runs: params delta, gates, scores -> compare.md/.html")
    c.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories; the first is the reference")
    c.add_argument("--out", default="runs/compare", metavar="DIR", help="where compare.md and compare.html go")
    sw = sub.add_parser("sweep", help="run a sweep file's trials with Ray Tune into runs/sweeps/<name>/")
    sw.add_argument("sweep", help="sweep YAML, e.g. params/sweeps/smoke_ablation.yaml")
    sw.add_argument("--address", metavar="ADDR", help="a Ray cluster to run on (e.g. HEAD:6379; default: a local Ray)")
    sw.add_argument("--out", metavar="DIR", help="the sweep directory (default runs/sweeps/<name>)")
    a = ap.parse_args(argv)

    from .data import DataError
    from .params import ParamsError
    from .compare import CompareError
    from .rundir import RunDirError, RunLocked
    from .sweep.spec import SweepError
    from .record import RecordError      # (torch-free: the CLI imports torch only where it trains or loads)
    try:
        if a.cmd == "run":
            from . import pipeline
            return pipeline.run(a.params, start=a.start, only=a.only, force=a.force, run_dir=a.run_dir,
                                overrides=a.overrides, checkpoint=a.checkpoint)
        if a.cmd == "record":
            from . import record
            print(record.keep(a.run_dir, a.out))
            return 0
        if a.cmd == "book":
            from . import pipeline
            pipeline.build_book(a.run_dir, compare=a.compare, sweep=a.sweep)
            return 0
        if a.cmd == "bench":
            from . import bench
            if a.full_run:
                return bench.full_run(a.params, a.run_dir)
            bench.main(a.params, a.out, a.steps, a.epochs)
            return 0
        if a.cmd == "compare":
            from . import compare
            for path in compare.write(compare.table(a.run_dirs), a.out):
                print(path)
            return 0
        if a.cmd == "sweep":
            from .sweep import runner, spec
            return runner.run(spec.load(a.sweep), out=a.out, address=a.address)
    except (ParamsError, DataError, CompareError, RunDirError, RunLocked, SweepError, RecordError) as e:
        print(f"backfill: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:          # Ctrl-C: one line, not a traceback; a run reads `interrupted`
        print("backfill: interrupted" + ("; run the same command again to resume (finished notebooks and "
                                         "checkpoints are kept)" if a.cmd == "run" else ""), file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
