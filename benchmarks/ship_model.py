"""Trains the shipped model on every usable real CT, exports it, and scores it on patients it never
saw (the non-commercial scans: evaluation only, nothing trained on them ships).

  python benchmarks/ship_model.py --ct_dir ../shared/data/ct [--variant ""] [--steps 2000]
      [--phantom_share F] [--workdir runs/ship_real64] [--out cvaa_jax/pretrained/real64]
      [--set model.upsample=resize ...] [--eval_only]

The defaults are the shipped model's recipe (configs/real64.py, 64^3 x 4 mm: 2000 steps, 30 %
phantoms, bone voxels weighted 5x; `--variant cpu32` is the 32^3 recipe shipped until 2026-12-06);
the phantom share is the preset's own unless --phantom_share is given.

The recipe is benchmarks/real_anatomy.py's (configs/real64.py), with all folds' patients in
training. Held-out scores use the same code as the leave-one-patient-out table: model grid and the
patient's own frame, against the mean of the training CTs. Prints markdown tables and the weights'
sha256 (copy it into cvaa_jax/pretrained/__init__.py and the model card).
"""

import argparse
import json
import pathlib
import sys

import numpy as np
from absl import flags, logging

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import real_anatomy as ra  # noqa: E402
from cvaa_jax import pretrained, viz  # noqa: E402
from cvaa_jax.data import dataset, io  # noqa: E402


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--ct_dir", default=str(ROOT.parent / "shared" / "data" / "ct"))
  ap.add_argument("--external", default="noncommercial", help="folder under --ct_dir: held out")
  ap.add_argument("--variant", default="", help="configs/real64.py variant ('' or cpu32)")
  ap.add_argument("--steps", type=int, default=2000)
  ap.add_argument("--phantom_share", type=float, default=None,
                  help="share of phantom samples (default: the preset's own)")
  ap.add_argument("--workdir", default=str(ROOT / "runs" / "ship_real64"))
  ap.add_argument("--out", default=str(pretrained.DEFAULT))
  # Outside the repository's tracked tree: the held-out patients are non-commercial scans, so
  # their slice figures must not be committed.
  ap.add_argument("--figures", default=str(ROOT / "runs" / "ship_figures"),
                  help="slice figures of the held-out patients (never commit: non-commercial)")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="config override, as in real_anatomy.py (e.g. model.upsample=resize)")
  ap.add_argument("--eval_only", action="store_true",
                  help="no training: export and score the workdir's latest checkpoint as it is "
                       "(a run stopped early, or one to re-score)")
  args = ap.parse_args()
  flags.FLAGS.mark_as_parsed()
  logging.set_verbosity(logging.WARNING)
  ct_dir, work = pathlib.Path(args.ct_dir), pathlib.Path(args.workdir)
  config = ra.make_config(args.variant, ct_dir, args.steps, (), args.phantom_share,
                          overrides=args.set)
  seconds = 0.0 if args.eval_only else ra.train(config, work)
  digest = pretrained.export(work, args.out)
  print(f"trained in {seconds:.0f} s; exported {args.out}; weights sha256 {digest}")

  cases = dataset.load_index(work / "data")
  train = [c for c in cases if not c.is_phantom]
  print("training CTs: " + ", ".join(c.case_id for c in train))
  mean = np.mean([np.asarray(c.load(), np.float32) for c in train], axis=0)
  predict = ra.load_model(work)
  # The held-out patients through the same deterministic preprocessing as the training cases.
  ext_dir = ct_dir / args.external
  ext_cfg = dict(config.data.to_dict(), ct_dir=str(ext_dir), ct_exclude="", test_cases=[],
                 phantom_share=0.0, split=[0.0, 0.0, 1.0])
  ext_cases = dataset.prepare(ext_cfg, work / "external", seed=0, log=lambda *_: None)
  found = io.list_ct_files(ext_dir)
  paths = dict(zip(io.case_names(ext_dir, found), found))
  d = config.data
  span = d.hu_max - d.hu_min
  rows = {"grid": {}, "native": {}}
  for case in ext_cases:
    gt = np.asarray(case.load(), np.float32)
    vols = {"ground truth": gt}
    for name, fn in (("mean-volume baseline", lambda v: mean), ("shipped model", predict)):
      pred = np.asarray(fn(gt), np.float32)
      vols[name] = pred
      rows["grid"].setdefault(name, {})[case.case_id] = ra.grid_scores(pred, gt, d.spacing_mm,
                                                                       span, d.hu_min)
      rows["native"].setdefault(name, {})[case.case_id] = ra.native_scores(
          pred, case, paths[case.case_id], d.hu_min, d.hu_max)
    rows["native"].setdefault("model-grid ground truth (ceiling)", {})[case.case_id] = \
        ra.native_scores(gt, case, paths[case.case_id], d.hu_min, d.hu_max)
    viz.save_slices_png(vols, pathlib.Path(args.figures) / f"shipped_{case.case_id}.png",
                        vmax=0.35, title=f"{case.case_id} (never trained on)")
  (work / "external_scores.json").write_text(json.dumps(rows, indent=1))
  for frame, keys in (("grid", ("psnr", "ssim", "mae_hu", "dice", "hd95_mm")),
                      ("native", ("psnr", "mae_hu", "dice", "hd95_mm"))):
    print(f"\n### shipped model, {frame}, per held-out patient\n")
    print("| patient | method | " + " | ".join(keys) + " |\n| --- | --- |" + " --- |" * len(keys))
    for name, per_case in rows[frame].items():
      for case_id, s in per_case.items():
        print(f"| {case_id} | {name} | " + " | ".join(f"{s[k]:.3g}" for k in keys) + " |")


if __name__ == "__main__":
  main()
