"""Sweeps: one params file run over a search space, each trial a normal run directory, executed as Ray Tune trials.

Import the module you need; this package re-exports nothing.

- `spec`: the sweep file (params/sweeps/*.yaml): its keys and constants, `load` (validation), the expansion into
  named trials, the `claims:` of a one-factor-at-a-time design, SweepError. Imports no other module of the package.
- `results`: a sweep directory's files: trial.json, what a trial reports after each phase, the results table
  (results.parquet, results.md), sweep.json, and `load_results` that reads them back.
- `analysis`: what the chapters call on a results table (notebooks/10_sweep.ipynb): mean +- sd across seeds, paired
  comparisons, Diebold-Mariano and the Model Confidence Set on seed-averaged daily losses, figures. Imports neither
  `runner` nor `results`, so a chapter never imports Ray.
- `claims`: the analysis of a claims sweep and its verdicts (notebooks/11_plan_claims.ipynb).
- `runner`: running the trials with Ray Tune (`run`, `trainable`, the scheduler, starting and stopping Ray) and
  executing the chapter; the CLI's `python -m backfill sweep`. Ray is imported inside its functions only.

None of these is part of the notebooks' code key (rundir.ORCHESTRATION): no notebook of a run (01-09) imports them.
"""
