"""Leave-one-patient-out on real CTs: phantoms-only vs real-only vs mixed, against the mean volume.

  python benchmarks/real_anatomy.py --ct_dir ../shared/data/ct [--variant cpu32] [--steps 400]
      [--folds 3] [--workdir runs/bench_real] [--figures docs/images/real_anatomy]

The real patients (configs/real64.py's layout: top-level NIfTIs, slabs and non-commercial scans
left out) are dealt round-robin into `--folds` folds; each fold is held out of training once, so
every patient is scored by models that never saw it. Per fold, with the same recipe and steps:
  real-only  few-CT augmentation on the other folds' CTs (data.phantom_share 0)
  mixed      the same plus procedural phantoms (the variant's data.phantom_share, 0.3 in both
             presets; `--set data.phantom_share=...` changes it)
  mixed+mirror  mixed with left-right mirroring of half the real samples (situs inversus anatomy;
             only with --methods including it)
and once for all folds: phantoms-only (the same model trained on phantoms, no real anatomy). The
baseline predicts the mean of the fold's training CTs.

Each held-out patient's DRR pair (cone, the run's reference geometry) is reconstructed, then scored
  * on the model grid: PSNR and SSIM ([0, 1] window), MAE in HU, bone Dice and HD95 at 250 HU;
  * in the patient's own frame: the prediction brought back to HU on the original scan's voxels
    (transforms.invert) and compared there with the original HU, inside the model's field of view:
    PSNR (same window), MAE in HU, bone Dice and HD95 at 250 HU on the native voxel spacing. The
    model-grid ground truth scored the same way is the ceiling that the grid's voxel size allows.
Prints markdown tables and writes one slice figure per held-out patient. Runs resume from their
workdirs, so an interrupted benchmark continues where it stopped.
"""

import argparse
import ast
import json
import pathlib
import sys
import time

import jax
import numpy as np
from absl import flags, logging

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cvaa_jax import run as run_lib, viz  # noqa: E402
from cvaa_jax.data import dataset, io  # noqa: E402
from cvaa_jax.data.volume import Volume  # noqa: E402
from cvaa_jax.eval import bone, metrics, native  # noqa: E402

BONE_HU = 250.0


def fold_of(case_ids, folds):
  ids = sorted(case_ids)
  return [ids[k::folds] for k in range(folds)]


def apply_overrides(config, overrides):
  """`--set key=value` (dotted key, Python literal or bare string) applied to every run's config."""
  for item in overrides:
    key, _, raw = item.partition("=")
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      value = raw
    *path, leaf = key.split(".")
    node = config
    for part in path:
      node = getattr(node, part)
    if not hasattr(node, leaf):
      raise SystemExit(f"--set {item}: the config has no field {key!r}")
    setattr(node, leaf, value)
  return config


def make_config(variant, ct_dir, steps, test_cases=(), phantom_share=None, phantoms_only=False,
                mirror_prob=0.0, overrides=()):
  """One run's config: the variant's recipe, the method's settings, then `overrides` (`--set`).

  `phantom_share` None keeps the variant's own share (configs/real64.py: 0.3 in both). The
  overrides are applied LAST, so an explicit `--set data.phantom_share=...` is what runs: applied
  first, as before 2026-12-05, the method's hard-coded 0.3 replaced it without a word, and the
  "15 %" leave-one-out runs of 2026-12-03/04 trained at 30 % (benchmarks/RESULTS.md)."""
  from configs import real64  # pylint: disable=g-import-not-at-top
  c = real64.get_config(variant)
  c.train.num_steps = steps
  if phantoms_only:
    c.data.source = "phantom"
    c.data.num_phantoms = 48
    c.data.split = (0.9, 0.0, 0.1)
    c.data.phantom_share = 0.0
    c.drr.shift_voxels = 2
  else:
    c.data.ct_dir = str(ct_dir)
    c.data.test_cases = tuple(test_cases)
    c.data.split = (1.0, 0.0, 0.0)
    if phantom_share is not None:
      c.data.phantom_share = phantom_share
    c.augment.mirror_prob = mirror_prob
  return apply_overrides(c, overrides)


def train(config, workdir):
  t = time.time()
  run_lib.run(config, str(workdir))
  return time.time() - t


def load_model(workdir):
  from cvaa_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from cvaa_jax.train import loop, step as step_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.load_run_config(workdir)
  scfg, params, _ = loop.restore_for_inference(config, workdir, "latest")
  fn = jax.jit(lambda p, v: step_lib.predict(scfg, p, v))
  return lambda vol: np.asarray(fn(params, vol[None]))[0]


def grid_scores(pred, gt, spacing, hu_range, hu_min):
  m = metrics.all_metrics(pred[None], gt[None], data_range=1.0)
  b = bone.bone_metrics(pred, gt, (spacing,) * 3, BONE_HU, hu_min, hu_min + hu_range)
  return {"psnr": float(m["psnr"][0]), "ssim": float(m["ssim"][0]),
          "mae_hu": float(m["mae"][0]) * hu_range, "dice": b["bone/dice"],
          "hd95_mm": b["bone/hd95_mm"]}


def native_scores(pred, case, ct_path, hu_min, hu_max):
  """Scores in the patient's own frame (eval/native.py)."""
  meta = json.loads(case.path.with_suffix(".json").read_text())
  model_vol = Volume(pred, case.affine, history=tuple(meta["history"]))
  return native.native_scores(model_vol, io.load_ct(ct_path), hu_min, hu_max, BONE_HU)


def fmt(values):
  v = np.asarray([x for x in values if np.isfinite(x)], np.float64)
  return f"{v.mean():.3g} ± {v.std():.2g}" if len(v) else "n/a"


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--ct_dir", default=str(ROOT.parent / "shared" / "data" / "ct"))
  ap.add_argument("--variant", default="cpu32")
  ap.add_argument("--steps", type=int, default=400)
  ap.add_argument("--folds", type=int, default=3)
  ap.add_argument("--workdir", default=str(ROOT / "runs" / "bench_real"))
  ap.add_argument("--figures", default=str(ROOT / "docs" / "images" / "real_anatomy"))
  ap.add_argument("--methods", default="phantoms-only,real-only,mixed")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="config override for every run, e.g. --set model.upsample=resize")
  ap.add_argument("--only_folds", default="", help="comma-separated fold numbers (default: all)")
  args = ap.parse_args()
  flags.FLAGS.mark_as_parsed()
  logging.set_verbosity(logging.WARNING)
  work = pathlib.Path(args.workdir)
  ct_dir = pathlib.Path(args.ct_dir)
  methods = args.methods.split(",")

  from configs import real64  # pylint: disable=g-import-not-at-top
  probe = real64.get_config(args.variant)
  found = io.list_ct_files(ct_dir, probe.data.ct_glob, probe.data.ct_exclude)
  paths = dict(zip(io.case_names(ct_dir, found), found))
  folds = fold_of(paths, args.folds)
  print(f"patients: {sorted(paths)}; folds: {folds}", flush=True)
  hu_min, hu_max = probe.data.hu_min, probe.data.hu_max
  spacing, span = probe.data.spacing_mm, hu_max - hu_min

  times = {}
  if "phantoms-only" in methods:
    times["phantoms-only"] = train(make_config(args.variant, ct_dir, args.steps,
                                               phantoms_only=True, overrides=args.set), work / "phantoms_only")
  rows = {"grid": {}, "native": {}}  # [frame][method][case] -> scores
  figures = {}
  chosen = {int(x) for x in args.only_folds.split(",") if x} or set(range(len(folds)))
  for k, held in enumerate(folds):
    if k not in chosen:
      continue
    fold_runs = {}
    for name, share, mirror in (("real-only", 0.0, 0.0), ("mixed", None, 0.0),
                                ("mixed+mirror", None, 0.5)):
      if name not in methods:
        continue
      wd = work / f"{name}_fold{k}"
      cfg = make_config(args.variant, ct_dir, args.steps, held, share, mirror_prob=mirror,
                        overrides=args.set)
      print(f"fold {k} {name}: phantom_share {cfg.data.phantom_share}, w_bone "
            f"{cfg.train.w_bone}, upsample {cfg.model.upsample}, {cfg.train.num_steps} steps",
            flush=True)
      times[f"{name} fold {k}"] = train(cfg, wd)
      fold_runs[name] = wd
    any_wd = next(iter(fold_runs.values()))
    cases = dataset.load_index(any_wd / "data")
    real_train = [c for c in cases if c.split == "train" and not c.is_phantom]
    mean = np.mean([np.asarray(c.load(), np.float32) for c in real_train], axis=0)
    predictors = {"mean-volume baseline": lambda v: mean}
    if "phantoms-only" in methods:
      predictors["phantoms-only"] = load_model(work / "phantoms_only")
    for name, wd in fold_runs.items():
      predictors[name] = load_model(wd)
    for case in (c for c in cases if c.split == "test"):
      gt = np.asarray(case.load(), np.float32)
      figures[case.case_id] = {"ground truth": gt}
      for name, predict in predictors.items():
        pred = np.asarray(predict(gt), np.float32)
        figures[case.case_id][name] = pred
        rows["grid"].setdefault(name, {})[case.case_id] = grid_scores(pred, gt, spacing, span,
                                                                      hu_min)
        rows["native"].setdefault(name, {})[case.case_id] = native_scores(
            pred, case, paths[case.case_id], hu_min, hu_max)
      rows["native"].setdefault("model-grid ground truth (ceiling)", {})[case.case_id] = \
          native_scores(gt, case, paths[case.case_id], hu_min, hu_max)
      print(f"fold {k} {case.case_id}: " + ", ".join(
          f"{n} {rows['grid'][n][case.case_id]['psnr']:.2f} dB / Dice "
          f"{rows['grid'][n][case.case_id]['dice']:.2f}" for n in predictors), flush=True)

  fig_dir = pathlib.Path(args.figures)
  for case_id, vols in figures.items():
    viz.save_slices_png(vols, fig_dir / f"{case_id}.png", vmax=0.35,
                        title=f"{case_id} (held out)")
  (work / f"scores_{'_'.join(methods)}.json").write_text(json.dumps(rows, indent=1))
  for frame, keys in (("grid", ("psnr", "ssim", "mae_hu", "dice", "hd95_mm")),
                      ("native", ("psnr", "mae_hu", "dice", "hd95_mm"))):
    print(f"\n### {frame}: mean ± std over {len(figures)} held-out patients\n")
    print("| method | " + " | ".join(keys) + " |\n| --- |" + " --- |" * len(keys))
    for name, per_case in rows[frame].items():
      print(f"| {name} | " + " | ".join(fmt([s[k] for s in per_case.values()]) for k in keys)
            + " |")
    print(f"\n#### {frame}, per patient: PSNR dB / bone Dice\n")
    names = list(rows[frame])
    print("| patient | " + " | ".join(names) + " |\n| --- |" + " --- |" * len(names))
    for case_id in figures:
      print(f"| {case_id} | " + " | ".join(
          f"{rows[frame][n][case_id]['psnr']:.2f} / {rows[frame][n][case_id]['dice']:.2f}"
          for n in names) + " |")
  print("\ntraining seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
  print(f"machine: {jax.devices()[0].device_kind}, {jax.device_count()} device(s)")


if __name__ == "__main__":
  main()
