"""Sweeps: one base config, a grid or list of overrides, one workdir per run, one results table.

  python -m cvaa_jax.sweep --config=configs/sweeps/fusion.py --workdir=runs/sweep
      [--task_id=N]      only the N-th run (a SLURM array task: --task_id=$SLURM_ARRAY_TASK_ID)
      [--list]           print the runs and their state, train nothing
      [--table_only]     tabulate what has finished

A sweep file defines `get_sweep()` returning a dict:
  base       'configs/demo.py' or 'configs/lumbar.py:tiny' (a config file, optionally :variant)
  overrides  {field: value} applied to every run (e.g. a shorter training)
  grid       {field: [values]}: every combination is a run, or
  runs       [{field: value}, ...]: an explicit list (may be combined with grid: list x grid)

Each run is `run.run(config, <workdir>/<name>)`, with the name made of its overrides. A run whose
summary.json records its full step count is finished and skipped; any other run with checkpoints
is resumed where it stopped (the run-identity check refuses a workdir holding a different run). A
failed run is recorded and the sweep goes on; the command exits 1 if any failed. The table
(`results.md`, `results.csv`) holds each run's held-out mean +- std next to the mean-volume
baseline, and `results.png` compares the runs' PSNR. Runs that differ only in `seed` are also
summarised as mean +- std over their seeds (`results_seeds.md` / `.csv`).
"""

from __future__ import annotations

import csv
import importlib.util
import itertools
import json
import pathlib
import re
from typing import Any

import ml_collections
import numpy as np
from absl import flags, logging

from cvaa_jax import cli
from cvaa_jax import config as config_lib
from cvaa_jax.errors import ConfigError, CvaaError

FLAGS = flags.FLAGS
METRICS = ("psnr", "ssim", "mae", "cosine")


def define_flags() -> None:
  flags.DEFINE_string("config", None, "Sweep file (configs/sweeps/*.py).")
  flags.DEFINE_string("workdir", None, "Sweep folder: one sub-folder per run.")
  flags.DEFINE_integer("task_id", None, "Run only this run (0-based), e.g. $SLURM_ARRAY_TASK_ID.")
  flags.DEFINE_bool("list", False, "List the runs and their state, train nothing.")
  flags.DEFINE_bool("table_only", False, "Tabulate finished runs, train nothing.")


def _load_module(path: pathlib.Path, what: str):
  if not path.is_file():
    raise ConfigError(f"{path}: {what} not found.")
  spec = importlib.util.spec_from_file_location(f"_cvaa_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f"{path}: cannot load ({type(e).__name__}: {e}).") from None
  return module


def base_config(spec: str, root: pathlib.Path) -> ml_collections.ConfigDict:
  """A config file 'path.py[:variant]' (relative to the working folder or the project root)."""
  path, _, variant = spec.partition(":")
  p = pathlib.Path(path)
  if not p.is_file() and (root / path).is_file():
    p = root / path
  module = _load_module(p, "base config")
  return module.get_config(variant) if variant else module.get_config()


def _set(cfg: ml_collections.ConfigDict, field: str, value: Any) -> None:
  *parents, leaf = field.split(".")
  node = cfg
  for part in parents:
    if part not in node:
      raise ConfigError(f"sweep override {field}: no section {part!r} in the config.")
    node = node[part]
  if leaf not in node:
    raise ConfigError(f"sweep override {field}: unknown field; see cvaa_jax/config.py.")
  node[leaf] = tuple(value) if isinstance(node[leaf], tuple) else value


def run_name(overrides: dict[str, Any]) -> str:
  """'model.fusion=add,seed=1' -> 'fusion-add_seed-1': readable, filesystem-safe, unique per set."""
  if not overrides:
    return "base"
  parts = []
  for k, v in overrides.items():
    v = ",".join(str(x) for x in v) if isinstance(v, (tuple, list)) else v
    parts.append(f"{k.split('.')[-1]}-{v}")
  return re.sub(r"[^A-Za-z0-9._+-]", "", "_".join(parts))


def expand(sweep: dict) -> list[tuple[str, dict[str, Any]]]:
  """(name, overrides) of every run: `runs` x the product of `grid`, in order."""
  unknown = set(sweep) - {"base", "overrides", "grid", "runs"}
  if unknown or "base" not in sweep:
    raise ConfigError(f"sweep: needs 'base' and any of overrides / grid / runs; unknown keys "
                      f"{sorted(unknown)}.")
  grid = sweep.get("grid", {})
  combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())] or [{}]
  listed = sweep.get("runs") or [{}]
  runs = [{**r, **g} for r in listed for g in combos]
  names = [run_name(r) for r in runs]
  if len(set(names)) != len(names):
    raise ConfigError("sweep: two runs have the same overrides.")
  return list(zip(names, runs))


def build_configs(sweep: dict, root: pathlib.Path) -> list[tuple[str, ml_collections.ConfigDict]]:
  out = []
  for name, overrides in expand(sweep):
    cfg = base_config(sweep["base"], root)
    for k, v in {**sweep.get("overrides", {}), **overrides}.items():
      _set(cfg, k, v)
    config_lib.validate(cfg)
    out.append((name, cfg))
  return out


def total_steps(cfg: ml_collections.ConfigDict, summary: dict) -> int:
  if cfg.train.num_steps > 0:
    return cfg.train.num_steps
  n_train = summary.get("split", {}).get("train", 0)
  return cfg.train.num_epochs * max(1, n_train // cfg.train.batch_size)


def state_of(workdir: pathlib.Path, cfg: ml_collections.ConfigDict) -> str:
  """'finished', 'interrupted' (checkpoints, no final summary), or 'new'."""
  summary_path = workdir / "summary.json"
  if summary_path.exists():
    try:
      summary = json.loads(summary_path.read_text())
      if summary.get("train", {}).get("steps") == total_steps(cfg, summary):
        return "finished"
    except ValueError:
      pass
  return "interrupted" if (workdir / "checkpoints").is_dir() else "new"


def run_sweep(sweep: dict, workdir: str | pathlib.Path, task_id: int | None = None,
              train: bool = True, root: pathlib.Path | None = None) -> list[dict]:
  """Trains (or skips / resumes) the runs, then writes the table; returns one row per run."""
  from cvaa_jax import run as run_lib  # pylint: disable=g-import-not-at-top
  root = root or pathlib.Path(__file__).resolve().parents[1]
  work = config_lib.prepare_workdir(workdir)
  runs = build_configs(sweep, root)
  if task_id is not None and not 0 <= task_id < len(runs):
    raise ConfigError(f"--task_id={task_id}: the sweep has {len(runs)} runs (0..{len(runs) - 1}).")
  (work / "sweep.json").write_text(json.dumps(
      {"sweep": sweep, "runs": [n for n, _ in runs]}, indent=1, default=str))
  failures = {}
  for i, (name, cfg) in enumerate(runs):
    if not train or (task_id is not None and i != task_id):
      continue
    state = state_of(work / name, cfg)
    if state == "finished":
      logging.info("sweep: %s finished, skipped", name)
      continue
    logging.info("sweep: %s (%d/%d) %s", name, i + 1, len(runs),
                 "resumed" if state == "interrupted" else "started")
    try:
      run_lib.run(cfg, str(work / name))
    except CvaaError as e:
      failures[name] = str(e)
      logging.error("sweep: %s failed: %s", name, e)
  rows = tabulate(work, runs, failures)
  if failures:
    raise CvaaError(f"sweep: {len(failures)} run(s) failed ({', '.join(failures)}); the others "
                    f"are in {work / 'results.md'}; rerun the same command to retry.")
  return rows


def tabulate(work: pathlib.Path, runs, failures=None) -> list[dict]:
  """results.md / results.csv / results.png from each run's summary.json."""
  failures = failures or {}
  rows = []
  for name, cfg in runs:
    row = {"run": name, "state": state_of(work / name, cfg)}
    if name in failures:
      row["state"] = "failed"
    path = work / name / "summary.json"
    if row["state"] == "finished":
      train = json.loads(path.read_text())["train"]
      row["steps"] = train["steps"]
      row["split"] = train.get("split")
      for who, key in (("model", ""), ("mean_volume_baseline", "baseline_")):
        for m in METRICS:
          s = (train.get(who) or {}).get(m)
          if s:
            row[f"{key}{m}"], row[f"{key}{m}_std"] = s["mean"], s["std"]
    rows.append(row)
  keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("run", "state", "steps",
                                                                          "split"), k))
  with open(work / "results.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
  lines = ["| run | state | steps | " + " | ".join(m.upper() for m in METRICS) +
           " | baseline PSNR |", "| --- | --- | --- |" + " --- |" * (len(METRICS) + 1)]
  for r in rows:
    cells = [f"{r[m]:.4g} ± {r[m + '_std']:.2g}" if m in r else "—" for m in METRICS]
    base = f"{r['baseline_psnr']:.4g}" if "baseline_psnr" in r else "—"
    lines.append(f"| {r['run']} | {r['state']} | {r.get('steps', '—')} | " + " | ".join(cells) +
                 f" | {base} |")
  split = next((r["split"] for r in rows if r.get("split")), "held-out")
  (work / "results.md").write_text("\n".join(lines) + f"\n\nMean ± std over the {split} cases of "
                                   "each run (EMA generator, [0, 1] volumes).\n")
  done = [r for r in rows if "psnr" in r]
  if done:
    from cvaa_jax import viz  # pylint: disable=g-import-not-at-top
    fig = viz.figure((1.2 + 0.9 * len(done), 3.2))
    ax = fig.subplots()
    ax.bar(range(len(done)), [r["psnr"] for r in done], yerr=[r["psnr_std"] for r in done],
           capsize=3, color="#4477aa")
    if "baseline_psnr" in done[0]:
      ax.axhline(done[0]["baseline_psnr"], color="#aa3377", ls="--", lw=1, label="mean volume")
      ax.legend(fontsize=7)
    ax.set_xticks(range(len(done)), [r["run"] for r in done], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("PSNR (dB)")
    lo = min(r["psnr"] - r["psnr_std"] for r in done)
    ax.set_ylim(bottom=max(0.0, lo - 2))
    fig.tight_layout()
    fig.savefig(work / "results.png", dpi=120)
  over_seeds(work, rows)
  return rows


def _without_seed(name: str) -> str:
  return re.sub(r"(^|_)seed-\d+(?=_|$)", "", name).strip("_") or "base"


def over_seeds(work: pathlib.Path, rows: list[dict]) -> list[dict]:
  """results_seeds.md / .csv: runs that differ only in `seed`, as mean +- std over their seeds.

  Each seed contributes its held-out mean; the spread is the sample std (ddof 1) over seeds, the
  figure to compare method gaps against. Written only when some run has a seed in its name.
  """
  if not any(_without_seed(r["run"]) != r["run"] for r in rows):
    return []
  groups: dict[str, list[dict]] = {}
  for r in rows:
    groups.setdefault(_without_seed(r["run"]), []).append(r)
  out = []
  for method, members in groups.items():
    done = [r for r in members if "psnr" in r]
    row = {"method": method, "seeds": len(done), "of": len(members)}
    for m in (*METRICS, "baseline_psnr"):
      vals = np.asarray([r[m] for r in done if m in r], np.float64)
      if len(vals):
        row[m] = float(vals.mean())
        row[m + "_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else float("nan")
    out.append(row)
  keys = ["method", "seeds", "of"] + [k for m in (*METRICS, "baseline_psnr")
                                      for k in (m, m + "_std")]
  with open(work / "results_seeds.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    w.writerows(out)
  lines = ["| method | seeds | " + " | ".join(m.upper() for m in METRICS) + " | baseline PSNR |",
           "| --- | --- |" + " --- |" * (len(METRICS) + 1)]
  for r in out:
    cells = [("—" if m not in r else f"{r[m]:.4g}" if np.isnan(r[m + "_std"]) else
              f"{r[m]:.4g} ± {r[m + '_std']:.2g}") for m in (*METRICS, "baseline_psnr")]
    lines.append(f"| {r['method']} | {r['seeds']}/{r['of']} | " + " | ".join(cells) + " |")
  (work / "results_seeds.md").write_text(
      "\n".join(lines) + "\n\nMean ± sample std (ddof 1) over seeds of each seed's held-out mean "
      "(EMA generator, [0, 1] volumes); seeds/of: finished runs of the group.\n")
  return out


def main(argv):
  del argv
  cli.setup_logging()
  try:
    if not FLAGS.config or not FLAGS.workdir:
      raise ConfigError("--config (a sweep file) and --workdir are required.")
    module = _load_module(pathlib.Path(FLAGS.config), "sweep file")
    if not hasattr(module, "get_sweep"):
      raise ConfigError(f"{FLAGS.config}: defines no get_sweep().")
    sweep = module.get_sweep()
    root = pathlib.Path(__file__).resolve().parents[1]
    if FLAGS.list:
      work = pathlib.Path(FLAGS.workdir)
      for i, (name, cfg) in enumerate(build_configs(sweep, root)):
        print(f"{i}\t{name}\t{state_of(work / name, cfg)}")
      return
    rows = run_sweep(sweep, FLAGS.workdir, FLAGS.task_id, train=not FLAGS.table_only, root=root)
    print((pathlib.Path(FLAGS.workdir) / "results.md").read_text())
    del rows
  except CvaaError as e:
    cli.fail(str(e), code=1)


def cli_main() -> None:
  """Console entry point (pyproject [project.scripts]); same as `python -m cvaa_jax.sweep`."""
  define_flags()
  cli.run_app(main, __name__)


if __name__ == "__main__":
  cli_main()
