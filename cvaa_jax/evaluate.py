"""Evaluate one or several trained runs on their saved split, in one table and one figure.

  python -m cvaa_jax.evaluate --workdir=runs/cvaa --workdir=runs/add --out=reports/ablation \\
      [--which=best] [--split=test] [--x2ct_range=0,2500]

Per run: `<out>/<run>_cases.csv` (every metric per case). Together: `<out>/summary.md|json` (mean ±
std) and `<out>/figure.png` (the paper's Fig. 2: mid axial, sagittal and coronal slices of the
ground truth and of every run for the same case). Metrics: the paper's five on [0, 1] volumes
(data_range 1), X2CT-GAN's conventions (named `x2ct/*`, intensity scale stated), and bone Dice /
HD95 (mm) at 250 HU. Runs must share the data config (same split); the first run's cases are used.
"""

from __future__ import annotations

import csv
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from cvaa_jax import cli
from cvaa_jax import config as config_lib
from cvaa_jax import viz
from cvaa_jax.data import dataset, pipeline
from cvaa_jax.errors import CvaaError, InputError
from cvaa_jax.eval import bone, metrics, report, x2ct

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Command-line flags, defined only when run as a program (the module stays importable)."""
  flags.DEFINE_multi_string("workdir", None, "Trained run folder(s).")
  flags.DEFINE_string("out", None, "Report folder.")
  flags.DEFINE_enum("which", "best", ["best", "latest"], "Checkpoint of each run.")
  flags.DEFINE_string("split", "test", "Split to evaluate (test, val or train).")
  flags.DEFINE_string("x2ct_range", "0,2500", "X2CT-GAN convention intensity scale 'lo,hi'.")

PAPER = ("mae", "mse", "cosine", "psnr", "ssim")


def evaluate_run(workdir: pathlib.Path, which: str, split: str, x2ct_range, cases=None):
  """Per-case metrics (dicts), case ids and predictions of one run."""
  from cvaa_jax.train import loop, step as step_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.load_run_config(workdir)
  which = loop.resolve_which(workdir, which)
  scfg, params, step = loop.restore_for_inference(config, workdir, which)
  cases = cases if cases is not None else dataset.load_index(workdir / "data")
  if not any(c.split == split for c in cases):
    raise InputError(f"{workdir}: the split '{split}' holds no cases.")
  predict = jax.jit(lambda p, v, f=None, l=None: step_lib.predict(scfg, p, v, f, l))
  spacing = (config.data.spacing_mm,) * 3
  per_case, ids, preds = [], [], {}
  for batch in pipeline.eval_batches(cases, split, config.train.eval_batch_size):
    vol = jnp.asarray(batch["volume"])
    pred = np.asarray(predict(params, vol, batch.get("frontal"), batch.get("lateral")))
    m = {k: np.asarray(v) for k, v in metrics.all_metrics(pred, vol, data_range=1.0).items()}
    for i, ok in enumerate(batch["valid"]):
      if not ok:
        continue
      row = {k: float(v[i]) for k, v in m.items()}
      gt = np.asarray(batch["volume"][i])
      to_hu = lambda u: np.asarray(u, np.float64) * (config.data.hu_max - config.data.hu_min) + \
          config.data.hu_min
      row.update(x2ct.x2ct_metrics_hu(to_hu(pred[i]), to_hu(gt), x2ct_range))
      row.update(bone.bone_metrics(pred[i], gt, spacing, hu_min=config.data.hu_min,
                                   hu_max=config.data.hu_max))
      per_case.append(row)
      ids.append(batch["case_id"][i])
      preds[batch["case_id"][i]] = pred[i]
  name = config.model.name + (f"-{config.model.fusion}" if config.model.name == "cvaa_gan" else "")
  return name, step, per_case, ids, preds, cases


def _summary(per_case):
  return report.summarize(per_case, keys=list(per_case[0]))


def run_report(workdirs, out: pathlib.Path, which="best", split="test", x2ct_range=(0.0, 2500.0)):
  out.mkdir(parents=True, exist_ok=True)
  rows, figure, cases = {}, {}, None
  for wd in workdirs:
    wd = pathlib.Path(wd)
    name, step, per_case, ids, preds, cases = evaluate_run(wd, which, split, x2ct_range, cases)
    label = f"{name} ({wd.name}, step {step})"
    with open(out / f"{wd.name}_cases.csv", "w", newline="") as f:
      w = csv.writer(f)
      w.writerow(["case_id"] + list(per_case[0]))
      for cid, c in zip(ids, per_case):
        w.writerow([cid] + [f"{v:.6g}" for v in c.values()])
    rows[label] = _summary(per_case)
    if not figure:
      first = next(c for c in cases if c.case_id == ids[0])
      figure["ground truth"] = np.asarray(first.load())
      shown = ids[0]
    title = name if name not in figure else f"{name} ({wd.name})"  # short, unless two share it
    figure[title] = preds[shown]
  (out / "summary.json").write_text(json.dumps(rows, indent=1))
  paper = {k: {m: v[m] for m in PAPER if m in v} for k, v in rows.items()}
  md = report.markdown_table(paper, note=f"Paper metrics on [0, 1] volumes (data_range 1), "
                                         f"{split} split, EMA generators.")
  extra_keys = [k for k in next(iter(rows.values())) if k.startswith(("x2ct/", "bone/"))]
  md += "\n| method | " + " | ".join(extra_keys) + " |\n| --- |" + " --- |" * len(extra_keys) + "\n"
  for label, s in rows.items():
    md += f"| {label} | " + " | ".join(report.cell(s[k]) for k in extra_keys) + " |\n"
  n = {label: next(iter(s.values()))["n"] + next(iter(s.values()))["excluded"]
       for label, s in rows.items()}
  config = config_lib.load_run_config(pathlib.Path(workdirs[0]))
  md += (f"\nCases: {', '.join(f'{k}: {v}' for k, v in n.items())}; each mean covers the cases "
         "with a finite value (PSNR of identical volumes is +inf, cosine of an all-zero volume "
         "NaN; such cases are counted as excluded). Paper metrics on the model's [0, 1] window of "
         f"HU [{config.data.hu_min:g}, {config.data.hu_max:g}]. x2ct/*: X2CT-GAN's conventions "
         f"from the HU volumes on that code's own scale, HU + 1024 clipped to [{x2ct_range[0]:g}, "
         f"{x2ct_range[1]:g}] (PSNR on int32 volumes with peak 4095, MSE 0 -> 100 dB as in that "
         "code; SSIM 2D per slice, 7x7 uniform window, averaged over the three directions). "
         "bone/*: mask at 250 HU; HD95 per case = 95th percentile of both directions' surface "
         "distances pooled (mm), then mean over cases (inf when one mask is empty: excluded).\n")
  (out / "summary.md").write_text(md)
  viz.save_slices_png(figure, out / "figure.png", vmax=0.35, title=f"{split}: {shown}")
  return rows


def main(argv):
  del argv
  cli.setup_logging(info=False)
  try:
    if not FLAGS.workdir or not FLAGS.out:
      raise InputError("--workdir (one or more) and --out are required.")
    lo, hi = (float(v) for v in FLAGS.x2ct_range.split(","))
    rows = run_report(FLAGS.workdir, pathlib.Path(FLAGS.out), FLAGS.which, FLAGS.split, (lo, hi))
    print(f"wrote {FLAGS.out} ({len(rows)} runs)")
    print((pathlib.Path(FLAGS.out) / "summary.md").read_text())
  except (CvaaError, ValueError) as e:
    cli.fail(str(e))


def cli_main() -> None:
  """Console entry point (pyproject [project.scripts]); same as `python -m cvaa_jax.evaluate`."""
  define_flags()
  cli.run_app(main, __name__)


if __name__ == "__main__":
  cli_main()
