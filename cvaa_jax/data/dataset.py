"""Preparing a dataset once: the deterministic prefix (load -> orient -> resample -> window -> crop)
applied to every case and cached on disk, plus a seeded split by patient.

Layout under `<workdir>/data/`:
  index.json        data config, per-case source, preprocessing history, split and HU statistics
  cases/<id>.npy    float32 (S, S, S) volume in [0, 1], RAS, on the model grid
  cases/<id>.json   the case's affine (model grid -> world, RAS mm) and history

A second run with the same data config reuses the cache; a changed config rebuilds it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np

from cvaa_jax.data import io, phantom, transforms
from cvaa_jax.data.volume import Volume
from cvaa_jax.errors import InputError

INDEX = "index.json"
CACHE_VERSION = 1
PHANTOM_SOURCE = "lumbar_phantom("


@dataclasses.dataclass(frozen=True)
class Case:
  case_id: str
  split: str  # 'train' | 'val' | 'test'
  path: pathlib.Path  # the cached .npy
  affine: np.ndarray  # (4, 4) model grid -> world
  source: str
  xray_paths: tuple[pathlib.Path, pathlib.Path] | None = None  # cached model-input X-rays (pairs)
  # The whole scan on the model's spacing (for few-CT augmentation): (.npy path, body box first
  # voxel, body box last voxel), or None.
  scan: tuple[pathlib.Path, tuple[int, ...], tuple[int, ...]] | None = None

  @property
  def is_phantom(self) -> bool:
    return self.source.startswith(PHANTOM_SOURCE)

  def load(self) -> np.ndarray:
    return np.load(self.path, mmap_mode="r")


def _fingerprint(data_cfg: Mapping[str, Any]) -> str:
  blob = json.dumps({"v": CACHE_VERSION, **data_cfg}, sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def split_cases(case_ids: Sequence[str], shares: Sequence[float], seed: int,
                test_cases: Sequence[str] = ()) -> dict[str, str]:
  """Seeded patient-level split into train/val/test; every split with a non-zero share gets a case
  when there are enough cases (train first). `test_cases` are test whatever the draw, and the
  others are split among themselves (leave-one-patient-out folds)."""
  forced = {c: "test" for c in case_ids if c in set(test_cases)}
  ids = sorted(c for c in case_ids if c not in forced)
  if forced:
    return {**forced, **split_cases(ids, shares, seed)}
  order = np.random.default_rng(seed).permutation(len(ids))
  n = len(ids)
  n_val = int(round(shares[1] * n))
  n_test = int(round(shares[2] * n))
  if n >= 3:
    n_val = max(n_val, 1 if shares[1] > 0 else 0)
    n_test = max(n_test, 1 if shares[2] > 0 else 0)
  n_train = max(0, n - n_val - n_test)
  names = ["train"] * n_train + ["val"] * n_val + ["test"] * (n - n_train - n_val)
  return {ids[i]: names[rank] for rank, i in enumerate(order)}


def _phantoms(data_cfg: Mapping[str, Any], seed: int):
  size, sp = int(data_cfg["size"]), float(data_cfg["spacing_mm"])
  rng = np.random.default_rng(seed)
  for i in range(int(data_cfg["num_phantoms"])):
    implants = bool(rng.random() < data_cfg["phantom_implant_prob"])
    case_seed = seed * 100_003 + i
    yield (f"phantom_{i:04d}", f"{PHANTOM_SOURCE}seed={case_seed})",
           lambda s=case_seed, m=implants: phantom.lumbar_phantom(
               s, shape=(size,) * 3, spacing_mm=sp, implants=m).volume, None)


def _case_volumes(data_cfg: Mapping[str, Any], seed: int):
  """Yields (case_id, source description, loader, X-ray paths or None) for every case of the
  configured source (a 'ct_dir' run with `phantom_share` > 0 also yields its phantoms)."""
  if data_cfg["source"] == "phantom":
    yield from _phantoms(data_cfg, seed)
  elif data_cfg["source"] == "pairs":
    from cvaa_jax import xray_io  # pylint: disable=g-import-not-at-top
    root = pathlib.Path(data_cfg["pairs_dir"])
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
      raise InputError(f"{root}: no case sub-folders; each case needs ct.nii.gz (or a ct/ DICOM "
                       "folder) and frontal*/lateral* images.")
    for case in folders:
      cts = [p for p in case.iterdir() if p.name.lower() in ("ct", "ct.nii", "ct.nii.gz")]
      if len(cts) != 1:
        raise InputError(f"{case}: needs one CT named ct.nii, ct.nii.gz or ct/ (DICOM series).")
      yield (case.name, str(case), lambda p=cts[0]: io.load_ct(p, check_hu=data_cfg["check_hu"],
                                                 unoriented_axcodes=data_cfg.get(
                                                     "unoriented_axcodes", "")),
             xray_io.find_pair(case))
  else:
    root = pathlib.Path(data_cfg["ct_dir"])
    paths = io.list_ct_files(root, data_cfg.get("ct_glob", ""), data_cfg.get("ct_exclude", ""))
    for name, p in zip(io.case_names(root, paths), paths):
      yield name, str(p), lambda p=p: io.load_ct(p, check_hu=data_cfg["check_hu"],
                                                 unoriented_axcodes=data_cfg.get(
                                                     "unoriented_axcodes", "")), None


def preprocess_scan(vol: Volume, data_cfg: Mapping[str, Any]) -> tuple[np.ndarray, list, list]:
  """The whole scan on the model's spacing, RAS, windowed to [0, 1], and its body's bounding box
  (first and last voxel): what few-CT augmentation (data/augment.py) cuts training volumes from."""
  vol = transforms.spacing(transforms.ras(vol), float(data_cfg["spacing_mm"]))
  lo, hi = transforms.body_box(vol, float(data_cfg["body_threshold_hu"]))
  unit = transforms.scale_intensity_range(vol, float(data_cfg["hu_min"]), float(data_cfg["hu_max"]))
  return unit.array.astype(np.float32), [int(v) for v in lo], [int(v) for v in hi]


def preprocess_volume(vol: Volume, data_cfg: Mapping[str, Any]) -> Volume:
  size = int(data_cfg["size"])
  return transforms.preprocess(vol, spacing_mm=float(data_cfg["spacing_mm"]),
                               size=(size,) * 3, hu_min=float(data_cfg["hu_min"]),
                               hu_max=float(data_cfg["hu_max"]),
                               body_threshold_hu=float(data_cfg["body_threshold_hu"]))


def _atomic_save(path: pathlib.Path, writer) -> None:
  tmp = path.with_name(path.name + ".partial")
  with open(tmp, "wb") as f:
    writer(f)
  os.replace(tmp, path)


def prepare(data_cfg: Mapping[str, Any], out_dir: str | os.PathLike, seed: int = 0,
            log=print, keep_scans: bool = False) -> list[Case]:
  """Runs the deterministic prefix on every case (or reuses the cache) and returns the cases.

  `keep_scans`: also cache each CT's whole resampled scan for few-CT augmentation. A 'ct_dir' run
  with `phantom_share` > 0 adds `num_phantoms` phantoms, always in the training split: held-out
  scores are on real patients only.
  """
  data_cfg = dict(data_cfg)
  data_cfg["split"] = list(data_cfg["split"])
  data_cfg["test_cases"] = list(data_cfg.get("test_cases", ()))
  out = pathlib.Path(out_dir)
  cases_dir = out / "cases"
  cases_dir.mkdir(parents=True, exist_ok=True)
  fp = _fingerprint({**data_cfg, "seed": seed, **({"scans": True} if keep_scans else {})})
  index_path = out / INDEX
  sources = list(_case_volumes(data_cfg, seed))
  if data_cfg["source"] == "ct_dir" and data_cfg.get("phantom_share", 0) > 0:
    sources += list(_phantoms(data_cfg, seed))
  unknown = set(data_cfg["test_cases"]) - {s[0] for s in sources}
  if unknown:
    raise InputError(f"config.data.test_cases: {sorted(unknown)} not among the cases "
                     f"({', '.join(sorted(s[0] for s in sources)[:8])}...); use case ids as "
                     "data/index.json lists them.")
  old_split: dict[str, str] = {}
  if index_path.exists():
    try:
      index = json.loads(index_path.read_text())
    except ValueError:
      index = {}
    old_split = {c: e["split"] for c, e in index.get("cases", {}).items()}
    same_cases = set(index.get("cases", {})) == {s[0] for s in sources}
    if index.get("fingerprint") == fp and same_cases and all(
        (cases_dir / f"{c}.npy").exists() for c in index["cases"]):
      log(f"data: reusing cache {index_path} ({len(index['cases'])} cases)")
      return load_index(out)
  entries = {}
  for case_id, source, load, xrays in sources:
    cached = cases_dir / f"{case_id}.npy"
    raw = load()
    vol = preprocess_volume(raw, data_cfg)
    scan = None
    if keep_scans and not source.startswith(PHANTOM_SOURCE) and xrays is None:
      arr, lo, hi = preprocess_scan(raw, data_cfg)
      _atomic_save(cases_dir / f"{case_id}_scan.npy", lambda f, a=arr: np.save(f, a))
      scan = {"body_lo": lo, "body_hi": hi, "shape": list(arr.shape)}
    if xrays is not None:  # the user's own views: read, square, resize, scale like the DRRs
      from cvaa_jax import xray_io  # pylint: disable=g-import-not-at-top
      imgs = [xray_io.read_xray(x) for x in xrays]
      xray_io.check_pair(*imgs, *xrays)
      for view, img in zip(("frontal", "lateral"), imgs):
        arr = xray_io.to_model_input(img, int(data_cfg["size"]))
        _atomic_save(cases_dir / f"{case_id}_{view}.npy", lambda f, a=arr: np.save(f, a))
    _atomic_save(cached, lambda f, a=vol.array: np.save(f, a.astype(np.float32)))
    meta = {"affine": vol.affine.tolist(), "history": list(vol.history), "source": source}
    (cases_dir / f"{case_id}.json").write_text(json.dumps(meta, indent=1))
    entries[case_id] = {"source": source, "mean": float(vol.array.mean()),
                        "max": float(vol.array.max()), "xrays": xrays is not None, "scan": scan}
    log(f"data: {case_id} <- {source}: {vol.shape}, mean {entries[case_id]['mean']:.4f}")
  if not entries:
    raise InputError(f"{data_cfg.get('ct_dir') or 'data'}: no cases to prepare.")
  # A split once drawn stays: known cases keep their split, only new ones are drawn (among
  # themselves), so no validation or test case ever moves into training.
  real = [c for c in entries if not entries[c]["source"].startswith(PHANTOM_SOURCE)]
  mixed = data_cfg["source"] == "ct_dir" and len(real) < len(entries)
  forced = set(data_cfg["test_cases"])
  new = [c for c in (real if mixed else entries) if c not in old_split or c in forced]
  split = {**{c: s for c, s in old_split.items() if c in entries and c not in forced},
           **split_cases(new, data_cfg["split"], seed, data_cfg["test_cases"])}
  if mixed:
    split.update({c: "train" for c in entries if c not in real})
  if old_split and new:
    log(f"data: kept the earlier split of {len(entries) - len(new)} cases; {len(new)} new cases "
        f"drawn among themselves")
  for case_id in entries:
    entries[case_id]["split"] = split[case_id]
  index = {"fingerprint": fp, "data": data_cfg, "seed": seed, "cases": entries}
  _atomic_save(index_path, lambda f: f.write(json.dumps(index, indent=1).encode()))
  return load_index(out)


def load_index(out_dir: str | os.PathLike) -> list[Case]:
  """The cases of a prepared dataset, in sorted order, with their split."""
  out = pathlib.Path(out_dir)
  index_path = out / INDEX
  if not index_path.exists():
    raise InputError(f"{index_path}: no prepared dataset here; run launch.py with this workdir "
                     "first.")
  index = json.loads(index_path.read_text())
  cases = []
  for case_id, entry in sorted(index["cases"].items()):
    meta = json.loads((out / "cases" / f"{case_id}.json").read_text())
    xrays = None
    if entry.get("xrays"):
      xrays = tuple(out / "cases" / f"{case_id}_{v}.npy" for v in ("frontal", "lateral"))
    scan = None
    if entry.get("scan"):
      scan = (out / "cases" / f"{case_id}_scan.npy", tuple(entry["scan"]["body_lo"]),
              tuple(entry["scan"]["body_hi"]))
    cases.append(Case(case_id, entry["split"], out / "cases" / f"{case_id}.npy",
                      np.asarray(meta["affine"]), entry["source"], xrays, scan))
  return cases
