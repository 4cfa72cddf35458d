"""Leave-one-patient-out of the reconstruction methods on every real patient in ../shared/data/ct.

  python benchmarks/atlas_loo.py [--ct_dir ../shared/data/ct] [--beams cone,parallel]
      [--out runs/atlas_loo] [--figures runs/atlas_loo/figures] [--only name,name]

For each patient P (the 9 licence-compatible scans and the 5 under noncommercial/): its model-grid
volume (configs/real64.py: 64^3 x 4 mm, body-centred) is rendered in the shipped model's canonical
views (cone at SID 750 mm, or parallel), and reconstructed by
  mean volume   the mean of the other licence-compatible patients' model-grid volumes;
  gan           the shipped network (cvaa_jax/pretrained/real64). It was trained on the 8 shared
                patients before vhp_male_pelvis: on those 8 it is NOT held out (favours it);
  atlas-k       the atlases of every other licence-compatible patient fitted (fit/register.py) and
                the k best by projection similarity fused (k = 1, 3, 5);
  hybrid        soft tissue from whichever of gan / atlas-3 re-projects better, bone from both
                (fit/hybrid.py); "hybrid, network soft tissue" always takes the network's;
  +refine       test-time consistency (fit/refine.py) applied to a method's output.
A held-out patient is never an atlas. Scores: on the model grid PSNR / SSIM ([0, 1] window), MAE in
HU, bone Dice and HD95 (>= 250 HU), re-projection agreement (NCC, PSNR of the canonical views), and
seconds; in the patient's own frame (original voxels inside the field of view) PSNR, MAE, bone Dice.
Uncertainty calibration (fused spread vs |error|, binned) is pooled over patients. Writes
scores.json, prints markdown tables, one slices + bone-MIP figure per patient.
"""

import argparse
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cvaa_jax import drr, viz  # noqa: E402
from cvaa_jax.data import dataset, io  # noqa: E402
from cvaa_jax.data.volume import Volume  # noqa: E402
from cvaa_jax.eval import bone, metrics, native  # noqa: E402
from cvaa_jax.fit import atlas as atlas_lib, fuse, hybrid, refine, register  # noqa: E402

SHIPPABLE = ("abdomen_totalseg", "chest_lidc", "chest_rtplan", "crlm_ct_1004", "crlm_ct_1006",
             "lidc_idri_0314", "lungdx_a0001", "lungdx_a0002", "vhp_male_pelvis")
NONCOMMERCIAL = ("nsclc_lung1_001", "nsclc_lung1_002", "nsclc_lung1_003", "chest_slicer_ctchest",
                 "chest_midrc_ricord_000082")
BONE_HU, HU_MIN, HU_MAX = 250.0, -1000.0, 4096.0
SPAN = HU_MAX - HU_MIN


def path_of(ct_dir, name):
  sub = "noncommercial/" if name in NONCOMMERCIAL else ""
  return ct_dir / f"{sub}{name}.nii.gz"


def prepare(ct_dir, cache, data_cfg):
  """Atlases and model-grid volumes of every patient (cached)."""
  cache.mkdir(parents=True, exist_ok=True)
  out = {}
  for name in SHIPPABLE + NONCOMMERCIAL:
    a_path, t_path = cache / f"{name}.atlas.npz", cache / f"{name}.grid.npz"
    if not (a_path.exists() and t_path.exists()):
      vol = io.load_ct(path_of(ct_dir, name))
      atlas_lib.from_volume(vol, name, data_cfg.spacing_mm).save(a_path)
      grid = dataset.preprocess_volume(vol, data_cfg)
      np.savez(t_path, unit=grid.array, affine=grid.affine)
    z = np.load(t_path)
    out[name] = (atlas_lib.load(a_path), np.asarray(z["unit"], np.float32), z["affine"])
  return out


def grid_scores(pred, gt, spacing):
  m = metrics.all_metrics(pred[None], gt[None], data_range=1.0)
  b = bone.bone_metrics(pred, gt, (spacing,) * 3, BONE_HU, HU_MIN, HU_MAX)
  return {"psnr": float(m["psnr"][0]), "ssim": float(m["ssim"][0]),
          "mae_hu": float(m["mae"][0]) * SPAN, "dice": b["bone/dice"], "hd95_mm": b["bone/hd95_mm"]}


def native_scores(pred, affine, orig):
  """The prediction on the original scan's voxels inside the field of view (eval/native.py)."""
  hist = ({"op": "scale_intensity_range", "a_min": HU_MIN, "a_max": HU_MAX, "b_min": 0.0,
           "b_max": 1.0, "clip": True},)
  return native.native_scores(Volume(pred, affine, history=hist), orig, HU_MIN, HU_MAX, BONE_HU,
                              with_hd95=False)


def to_unit(hu):
  return np.clip((np.asarray(hu, np.float32) - HU_MIN) / SPAN, 0.0, 1.0)


def fmt(values):
  v = np.asarray([x for x in values if np.isfinite(x)], np.float64)
  return f"{v.mean():.3g} ± {v.std():.2g}" if len(v) else "n/a"


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--ct_dir", default=str(ROOT.parent / "shared" / "data" / "ct"))
  ap.add_argument("--beams", default="cone,parallel")
  ap.add_argument("--out", default=str(ROOT / "runs" / "atlas_loo"))
  ap.add_argument("--figures", default="")
  ap.add_argument("--only", default="")
  ap.add_argument("--no_native", action="store_true")
  ap.add_argument("--refine_smooth", type=float, default=None,
                  help="refine's smoothness weight (default: the package's)")
  args = ap.parse_args()
  flags.FLAGS.mark_as_parsed()
  logging.set_verbosity(logging.WARNING)
  from cvaa_jax import reconstruct  # pylint: disable=g-import-not-at-top
  out = pathlib.Path(args.out)
  fig_dir = pathlib.Path(args.figures) if args.figures else out / "figures"
  rec = reconstruct.Reconstructor(None)
  data_cfg = rec.config.data
  ref = rec.reference
  fov, size = ref.fov_mm, ref.size
  data = prepare(pathlib.Path(args.ct_dir), out / "cache", data_cfg)
  (out / "volumes").mkdir(exist_ok=True)
  names = [n for n in SHIPPABLE + NONCOMMERCIAL if not args.only or n in args.only.split(",")]
  scores_path = out / "scores.json"
  rows = json.loads(scores_path.read_text()) if scores_path.exists() else {}
  calib = {"atlas-3": []}
  for beam in args.beams.split(","):
    kappa = (0.0, 0.0) if beam == "parallel" else (1.0 / ref.sid, 1.0 / ref.sid)
    for name in names:
      key = f"{beam}/{name}"
      _, gt, affine = data[name]
      mu = drr.unit_to_mu(jnp.asarray(gt))
      views = np.asarray(drr.normalize_projection(
          register.render(mu, register.geometries(size, fov, kappa), fov)))
      target = register.Target(views, kappa, fov)
      others = [n for n in SHIPPABLE if n != name]
      preds, secs = {}, {}
      preds["mean volume"] = np.mean([data[n][1] for n in others], axis=0)
      t = time.perf_counter()
      preds["gan"], _ = rec(views[0], views[1], np.asarray(kappa, np.float32))
      secs["gan"] = time.perf_counter() - t
      atlases = [data[n][0] for n in others]
      shape_to = register.pad_shape(atlases)
      t = time.perf_counter()
      fits = [register.fit_atlas(a, target, shape_to=shape_to) for a in atlases]
      fit_s = time.perf_counter() - t
      for k in (1, 3, 5):
        hu, std, chosen = fuse.fuse(fits, k)
        preds[f"atlas-{k}"] = to_unit(hu)
        secs[f"atlas-{k}"] = fit_s
        if k == 3:
          std3, chosen3 = std, chosen
          calib["atlas-3"].append((std, hu - (gt * SPAN + HU_MIN)))
      net_hu, atl_hu = preds["gan"] * SPAN + HU_MIN, preds["atlas-3"] * SPAN + HU_MIN
      soft = hybrid.choose_soft(refine.agreement(preds["gan"], target),
                                refine.agreement(preds["atlas-3"], target))
      preds["hybrid"] = to_unit(hybrid.combine(net_hu, atl_hu, soft_from=soft))
      preds["hybrid, network soft tissue"] = to_unit(hybrid.combine(net_hu, atl_hu))
      secs["hybrid"] = secs["hybrid, network soft tissue"] = secs["gan"] + fit_s
      for base in ("gan", "atlas-3", "hybrid"):
        t = time.perf_counter()
        kw = {} if args.refine_smooth is None else {"smooth": args.refine_smooth}
        preds[f"{base}+refine"] = refine.refine(preds[base], target, **kw)
        secs[f"{base}+refine"] = secs[base] + time.perf_counter() - t
      orig = None if args.no_native else io.load_ct(path_of(pathlib.Path(args.ct_dir), name))
      np.savez_compressed(out / "volumes" / f"{beam}_{name}.npz", std=std3,
                          **{m.replace(" ", "_"): np.asarray(v, np.float16) for m, v in preds.items()})
      row = {"atlases": chosen3, "fit_seconds_per_atlas": fit_s / len(atlases), "soft": soft,
             "ranking": [(f.name, round(f.score, 4), round(bone.dice(f.hu > BONE_HU,
                                                                      gt * SPAN + HU_MIN > BONE_HU), 3))
                         for f in fuse.rank(fits)]}
      for m, pred in preds.items():
        pred = np.asarray(pred, np.float32)
        r = {"grid": grid_scores(pred, gt, data_cfg.spacing_mm),
             "reprojection": refine.agreement(pred, target), "seconds": secs.get(m, 0.0)}
        if orig is not None:
          r["native"] = native_scores(pred, affine, orig)
        row[m] = r
      rows[key] = row
      scores_path.write_text(json.dumps(rows, indent=1))
      print(f"{key}: " + ", ".join(f"{m} {row[m]['grid']['psnr']:.2f}/{row[m]['grid']['dice']:.2f}"
                                   for m in preds) + f"; atlases {chosen3}; "
            f"{fit_s / len(atlases):.1f} s/atlas", flush=True)
      if beam == "cone":
        vols = {"truth": gt, "mean volume": preds["mean volume"], "gan": preds["gan"],
                "atlas-3": preds["atlas-3"], "hybrid": preds["hybrid"]}
        viz.save_bone_figure(vols, fig_dir / f"{name}.png", spacing_mm=data_cfg.spacing_mm,
                             title=f"{name} (held out), cone views",
                             uncertainty=std3)
  if calib["atlas-3"]:
    std = np.concatenate([s.ravel() for s, _ in calib["atlas-3"]])
    err = np.concatenate([e.ravel() for _, e in calib["atlas-3"]])
    (out / "calibration.json").write_text(json.dumps(fuse.calibration(std, err), indent=1))
  summarize(rows)


def summarize(rows):
  methods = [m for m in next(iter(rows.values())) if isinstance(next(iter(rows.values()))[m], dict)
             and "grid" in next(iter(rows.values()))[m]]
  for beam in sorted({k.split("/")[0] for k in rows}):
    keys = [k for k in rows if k.startswith(beam + "/")]
    print(f"\n### {beam}: mean ± std over {len(keys)} held-out patients (model grid)\n")
    cols = ("psnr", "ssim", "mae_hu", "dice", "hd95_mm")
    print("| method | " + " | ".join(cols) + " | reproj NCC F/L | s |\n| --- |" + " --- |" * (len(cols) + 2))
    for m in methods:
      rs = [rows[k][m] for k in keys]
      rp = [np.mean([r["reprojection"][v]["ncc"] for r in rs]) for v in ("frontal", "lateral")]
      print(f"| {m} | " + " | ".join(fmt([r["grid"][c] for r in rs]) for c in cols)
            + f" | {rp[0]:.3f} / {rp[1]:.3f} | {np.mean([r['seconds'] for r in rs]):.1f} |")
    if "native" in rows[keys[0]]["gan"]:
      print(f"\n#### {beam}, patient's own frame\n\n| method | psnr | mae_hu | dice |\n| --- | --- | --- | --- |")
      for m in methods:
        rs = [rows[k][m]["native"] for k in keys]
        print(f"| {m} | " + " | ".join(fmt([r[c] for r in rs]) for c in ("psnr", "mae_hu", "dice")) + " |")
    print(f"\n#### {beam}, per patient: PSNR dB / bone Dice\n")
    print("| patient | " + " | ".join(methods) + " |\n| --- |" + " --- |" * len(methods))
    for k in keys:
      print(f"| {k.split('/')[1]} | " + " | ".join(
          f"{rows[k][m]['grid']['psnr']:.2f} / {rows[k][m]['grid']['dice']:.2f}" for m in methods) + " |")
  print(f"\nmachine: {jax.devices()[0].device_kind}, {jax.device_count()} device(s)")


if __name__ == "__main__":
  main()
