"""The config schema: every field a run reads, its default, and its validation.

`base_config()` is the single source of truth for which fields exist. Experiment files in `configs/`
start from it and change values; `validate()` then rejects a field the schema does not know (a typo in
a config file or an override), a value of the wrong type, or one out of range, with one message naming
the field and the fix. Library code takes plain typed arguments: sections are splatted into
constructors, never passed down as ConfigDicts.
"""

from __future__ import annotations

import difflib
import os
import pathlib
from typing import Any

import ml_collections

from cvaa_jax.errors import ConfigError

DATA_SOURCES = ("phantom", "ct_dir", "pairs")
REMAT_MODES = ("none", "blocks", "generator")
# train.remat was a bool before 'blocks' existed: old run configs and command lines still work.
REMAT_ALIASES = {"False": "none", "True": "generator", False: "none", True: "generator"}


def base_config() -> ml_collections.ConfigDict:
  """All fields with the paper's values (lumbar setup) as defaults."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.source = "phantom"  # 'phantom': procedural lumbar CTs; 'ct_dir': a folder of the user's CTs.
  c.data.ct_dir = ""  # .nii/.nii.gz files and/or DICOM series folders (one case each).
  c.data.ct_glob = ""  # nested layouts: glob(s) under ct_dir, comma-separated, e.g.
  #                      '*/ct.nii.gz' or '**/*_ct.nii.gz'; empty: ct_dir's top level
  c.data.ct_exclude = ""  # fnmatch patterns on the path under ct_dir, comma-separated, e.g.
  #                         '*seg*,*label*,derivatives/*': masks and label maps are not CTs
  c.data.test_cases = ()  # case ids always held out as test (leave-one-patient-out folds);
  #                         the other cases are split by data.split
  c.data.phantom_share = 0.0  # source 'ct_dir': share of training samples drawn from
  #                             data.num_phantoms procedural phantoms mixed in (0: real CTs only)
  c.data.pairs_dir = ""  # source 'pairs': one folder per case with ct.nii[.gz] (or ct/ DICOM) and
  #                        its own frontal*/lateral* images (another DRR tool's, or real paired X-rays)
  c.data.num_phantoms = 32  # cases generated when source == 'phantom'.
  c.data.phantom_implant_prob = 0.4  # share of phantoms with pedicle screws.
  c.data.spacing_mm = 2.0  # isotropic voxel size of the model grid.
  c.data.size = 128  # model grid is size^3 voxels.
  c.data.hu_min = -1000.0  # HU window, mapped to [0, 1] ...
  c.data.hu_max = 4096.0  # ... with metal (screws) kept up to the top.
  c.data.body_threshold_hu = -400.0  # body mask for centring the crop.
  c.data.split = (0.8, 0.1, 0.1)  # train / val / test shares, by patient.
  c.data.check_hu = True  # reject volumes that do not look like HU.
  c.data.unoriented_axcodes = ""  # NIfTIs without orientation (qform/sform codes 0): e.g. 'LPS'
  #                                 states their axes; empty: such files are rejected

  # Few-CT augmentation of 'ct_dir' training cases (data/augment.py), drawn per sample from the
  # whole resampled scan, seeded by the sample's index like the rest of the pipeline. All off by
  # default (the paper's fixed body-centred crop); configs/real64.py turns them on.
  c.augment = ml_collections.ConfigDict()
  c.augment.placement = False  # field of view anywhere along the scan and across the body
  c.augment.rotate_deg = 0.0  # uniform rotation about each axis, +- degrees
  c.augment.scale = 0.0  # isotropic scaling 1 +- this
  c.augment.elastic_mm = 0.0  # smooth random displacement, std in mm of its control points
  c.augment.elastic_points = 4  # control points per axis of the displacement field
  c.augment.hu_gain = 0.0  # attenuation (HU + 1000) scaled by 1 +- this
  c.augment.hu_offset = 0.0  # HU added, +- this
  c.augment.hu_noise = 0.0  # Gaussian noise, std in HU
  c.augment.mirror_prob = 0.0  # left-right mirroring: creates situs inversus anatomy (heart and
  #                              liver swap sides), not a pose change; off unless asked for

  c.drr = ml_collections.ConfigDict()  # how training X-rays are rendered from the CT volumes
  c.drr.parallel = False  # cone beam (clinical) by default; the models' lifting follows it
  c.drr.sid = 750.0  # source to isocentre, mm
  c.drr.sdd = 1000.0  # source to detector, mm
  # Geometry randomisation: each training sample draws its own view geometry, which the models'
  # lifting then uses (models/projection.py). SID is drawn uniformly in 1/SID; the SDD needs no
  # range, since images are resampled onto the isocentre plane where it drops out. On by default
  # (benchmarks/geometry.py: same scores at the training geometry, up to 3 dB better elsewhere);
  # sid_range=(0, 0) and both shares 0 give the paper's single fixed geometry.
  c.drr.sid_range = (600.0, 1600.0)  # (min, max) source to isocentre, mm; (0, 0): always drr.sid
  c.drr.parallel_share = 0.2  # share of views rendered as parallel beams
  c.drr.opposite_side_share = 0.3  # share of views taken from the other side (PA / right lateral)
  c.drr.noise_photons = 0.0  # > 0: Poisson detector noise at this many photons per pixel
  c.drr.intensity_gain = 0.0  # random gain +- this
  c.drr.intensity_gamma = 0.0  # random gamma +- this
  c.drr.shift_voxels = 0  # random translation of the training volume (augmentation)

  c.model = ml_collections.ConfigDict()  # splatted into cvaa_jax.models.GeneratorConfig
  c.model.name = "cvaa_gan"  # cvaa_gan | x2ct_gan, psr (as published) | x2ct_gan_light, psr_light | 3dcnn
  c.model.fusion = "cvaa"  # 'add' | 'concat' | 'vaa' | 'cvaa' (cvaa_gan only)
  c.model.levels = 4
  c.model.base_channels = 32
  c.model.max_channels = 256
  c.model.base_channels_3d = 16
  c.model.max_channels_3d = 128
  c.model.growth_rate = 16
  c.model.dense_layers = 4
  c.model.attn_kernel = 7
  c.model.upsample = "transpose"  # decoder x2 (cvaa_gan): 'transpose' (paper) | 'resize'
  c.model.dtype = "float32"  # 'bfloat16': bf16 compute, f32 parameters
  c.model.disc_channels = 32
  c.model.disc_layers = 3

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 4  # global batch, split over all devices
  c.train.num_epochs = 200
  c.train.num_steps = 0  # > 0 overrides num_epochs
  c.train.learning_rate = 2e-4
  c.train.b1 = 0.5
  c.train.b2 = 0.99
  c.train.decay_start = 1.0  # fraction of training after which the lr decays linearly to 0
  c.train.ema_decay = 0.999
  c.train.w_adv = 0.1  # X2CT-GAN's weights (the paper gives none)
  c.train.w_recon = 10.0
  c.train.w_proj = 10.0
  # Not in the paper: an L1 inside a soft-tissue/bone HU window (train/losses.py:window_l1), which
  # the [-1000, 4096] HU voxel MSE lacks for the spine at coarse grids. 0 disables it.
  c.train.w_window = 0.0
  c.train.window_hu = (-200.0, 1000.0)
  # Not in the paper: extra squared-error weight on the target's bone voxels (> bone_hu HU;
  # train/losses.py:bone_mse). A bone voxel then weighs w_recon + w_bone. 0 disables it.
  c.train.w_bone = 0.0
  c.train.bone_hu = 150.0
  c.train.log_every = 10
  c.train.eval_every = 200
  c.train.checkpoint_every = 200
  c.train.keep_checkpoints = 3
  c.train.num_workers = 0  # Grain worker processes (0: in the main process)
  # Rematerialisation (recompute activations in the backward pass, trading time for memory):
  # 'none'; 'blocks': one checkpoint per 3D block of the generator (each view lift, each decoder
  # level) and per discriminator stage, which lowers the peak; 'generator': one checkpoint around
  # the whole generator (recomputed at once, so it hardly lowers the peak; benchmarks/RESULTS.md).
  c.train.remat = "none"
  # Samples each device runs through the networks at once; the step accumulates the gradients of
  # per-device-batch / microbatch such passes (same update, less memory; on CPU also faster, as
  # XLA:CPU runs batch 1 convolutions at a higher rate). 0: the whole per-device batch at once.
  c.train.microbatch = 0
  c.train.eval_batch_size = 2
  c.train.distributed = False  # start JAX's multi-process runtime (cvaa_jax/distributed.py)
  c.train.coordinator_address = ""  # host:port of process 0; empty: from the cluster environment
  c.train.num_processes = 0  # 0: from the environment (SLURM_NTASKS, ...)
  c.train.process_id = -1  # -1: from the environment (SLURM_PROCID, ...)
  c.train.init_timeout_s = 120.0  # give up reaching the coordinator after this long
  c.train.heartbeat_timeout_s = 100.0  # a process silent this long is taken as dead

  c.preview = True  # write mid-slice PNGs of the prepared data.
  return c


def _walk(cfg: ml_collections.ConfigDict, prefix: str = ""):
  for key, value in cfg.items():
    name = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      yield from _walk(value, name + ".")
    else:
      yield name, value


def _is_type(value: Any, reference: Any) -> bool:
  if isinstance(reference, bool):
    return isinstance(value, bool)
  if isinstance(reference, float):
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if isinstance(reference, int):
    return isinstance(value, int) and not isinstance(value, bool)
  if isinstance(reference, (tuple, list)):
    return isinstance(value, (tuple, list))
  return isinstance(value, type(reference))


def validate(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks `cfg` against `base_config()`: known fields, types, ranges, paths. Returns `cfg`."""
  reference = dict(_walk(base_config()))
  given = dict(_walk(cfg))
  for name, value in given.items():
    if name not in reference:
      close = difflib.get_close_matches(name, reference, n=1)
      hint = f"did you mean config.{close[0]}?" if close else "remove it or see cvaa_jax/config.py."
      raise ConfigError(f"config.{name}: unknown field; {hint}")
    if not _is_type(value, reference[name]):
      raise ConfigError(f"config.{name}: expected {type(reference[name]).__name__}, got "
                        f"{value!r} ({type(value).__name__}); set --config.{name}=<value>.")
  missing = sorted(set(reference) - set(given))
  if missing:
    raise ConfigError(f"config.{missing[0]}: missing; build configs from "
                      "cvaa_jax.config.base_config().")

  def positive(name):
    if not given[name] > 0:
      raise ConfigError(f"config.{name}: must be > 0, got {given[name]!r}.")

  for name in ("data.spacing_mm", "data.size", "data.num_phantoms", "train.batch_size",
               "train.num_epochs", "train.learning_rate", "train.log_every", "train.eval_every",
               "train.checkpoint_every", "train.keep_checkpoints", "train.eval_batch_size",
               "drr.sid", "drr.sdd", "model.levels"):
    positive(name)
  d = cfg.data
  if d.size % (2 ** cfg.model.levels):
    raise ConfigError(f"config.data.size ({d.size}) must be divisible by 2^config.model.levels "
                      f"({2 ** cfg.model.levels}).")
  if not cfg.drr.sid < cfg.drr.sdd:
    raise ConfigError("config.drr.sid must be smaller than config.drr.sdd.")
  if d.size * d.spacing_mm / 2 * 1.74 >= cfg.drr.sid:
    raise ConfigError(f"config.drr.sid ({cfg.drr.sid} mm) puts the X-ray source inside the "
                      f"{d.size * d.spacing_mm:g} mm volume; increase it.")
  from cvaa_jax.models import registry, fusion  # pylint: disable=g-import-not-at-top
  if cfg.model.name not in registry.GENERATORS:
    raise ConfigError(f"config.model.name: {cfg.model.name!r} is not one of "
                      f"{sorted(registry.GENERATORS)}.")
  if cfg.model.fusion not in fusion.FUSIONS:
    raise ConfigError(f"config.model.fusion: {cfg.model.fusion!r} is not one of {fusion.FUSIONS}.")
  if cfg.model.upsample not in ("transpose", "resize"):
    raise ConfigError(f"config.model.upsample: {cfg.model.upsample!r} is not 'transpose' or "
                      "'resize'.")
  cfg.train.remat = REMAT_ALIASES.get(cfg.train.remat, cfg.train.remat)
  if cfg.train.remat not in REMAT_MODES:
    raise ConfigError(f"config.train.remat: {cfg.train.remat!r} is not one of {REMAT_MODES}.")
  if cfg.model.dtype not in ("float32", "bfloat16"):
    raise ConfigError("config.model.dtype: use 'float32' or 'bfloat16'.")
  if not 0 < cfg.train.decay_start <= 1 or not 0 <= cfg.train.ema_decay < 1:
    raise ConfigError("config.train.decay_start must lie in (0, 1] and ema_decay in [0, 1).")
  if d.source not in DATA_SOURCES:
    raise ConfigError(f"config.data.source: {d.source!r} is not one of {DATA_SOURCES}.")
  if d.hu_max <= d.hu_min:
    raise ConfigError(f"config.data.hu_max ({d.hu_max}) must exceed config.data.hu_min "
                      f"({d.hu_min}).")
  if not 0 <= d.phantom_implant_prob <= 1:
    raise ConfigError("config.data.phantom_implant_prob: must lie in [0, 1].")
  if len(d.split) != 3 or any(s < 0 for s in d.split) or abs(sum(d.split) - 1) > 1e-6:
    raise ConfigError(f"config.data.split: need three non-negative shares summing to 1 "
                      f"(train, val, test), got {tuple(d.split)}.")
  if d.source == "ct_dir":
    if not d.ct_dir:
      raise ConfigError("config.data.ct_dir: empty; set --config.data.ct_dir=/path/to/cts (a folder "
                        "of .nii/.nii.gz files or DICOM series folders).")
    if not pathlib.Path(d.ct_dir).expanduser().is_dir():
      raise ConfigError(f"config.data.ct_dir: folder {d.ct_dir} not found; set "
                        "--config.data.ct_dir to an existing folder of CTs.")
  if d.source == "pairs" and not pathlib.Path(d.pairs_dir).expanduser().is_dir():
    raise ConfigError(f"config.data.pairs_dir: folder {d.pairs_dir!r} not found; set "
                      "--config.data.pairs_dir to a folder with one sub-folder per case.")
  lo, hi = (tuple(cfg.drr.sid_range) + (0.0, 0.0))[:2]
  if len(cfg.drr.sid_range) != 2 or not ((lo == hi == 0) or 0 < lo <= hi):
    raise ConfigError(f"config.drr.sid_range: need (min, max) mm with 0 < min <= max, or (0, 0) "
                      f"for the fixed config.drr.sid; got {tuple(cfg.drr.sid_range)}.")
  if 0 < lo and d.size * d.spacing_mm / 2 * 1.74 >= lo:
    raise ConfigError(f"config.drr.sid_range: min {lo} mm puts the X-ray source inside the "
                      f"{d.size * d.spacing_mm:g} mm volume; increase it.")
  for name in ("drr.parallel_share", "drr.opposite_side_share", "data.phantom_share",
               "augment.mirror_prob", "augment.scale", "augment.hu_gain"):
    if not 0 <= given[name] <= 1:
      raise ConfigError(f"config.{name}: must lie in [0, 1], got {given[name]}.")
  for name in ("augment.rotate_deg", "augment.elastic_mm", "augment.hu_offset",
               "augment.hu_noise", "train.w_window", "train.w_bone", "train.microbatch"):
    if given[name] < 0:
      raise ConfigError(f"config.{name}: must be >= 0, got {given[name]}.")
  window = tuple(cfg.train.window_hu)
  if len(window) != 2 or not window[0] < window[1]:
    raise ConfigError(f"config.train.window_hu: need (low, high) HU with low < high, got {window}.")
  if given["augment.rotate_deg"] > 45:
    raise ConfigError("config.augment.rotate_deg: at most 45 degrees (the views' sides would "
                      "swap).")
  if given["augment.elastic_points"] < 2:
    raise ConfigError("config.augment.elastic_points: need at least 2 control points per axis.")
  if d.phantom_share >= 1 and d.source == "ct_dir":
    raise ConfigError("config.data.phantom_share: 1 would never use the CTs; use "
                      "data.source='phantom' instead.")
  for name in ("train.b1", "train.b2"):
    if not 0 <= given[name] < 1:
      raise ConfigError(f"config.{name}: Adam beta must lie in [0, 1), got {given[name]}.")
  return cfg


def prepare_workdir(workdir: str | os.PathLike, probe: str = ".write_test") -> pathlib.Path:
  """Creates `workdir` and proves it writable, or raises a one-line ConfigError naming it."""
  path = pathlib.Path(workdir).expanduser()
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / probe
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    raise ConfigError(f"--workdir={workdir}: not writable ({e.strerror or e}); choose a folder you "
                      "can write to.") from None
  return path


def _checkpoint_configs(workdir: pathlib.Path):
  """(step folder, config dict) of every checkpoint that holds a readable config, newest first:
  each checkpoint saves the run's config beside the state (train/checkpoint.py)."""
  import json  # pylint: disable=g-import-not-at-top
  found = []
  for sub in ("checkpoints", "best"):
    for step_dir in (workdir / sub).glob("*/config/metadata"):
      step = step_dir.parent.parent
      if step.name.isdigit():
        found.append((int(step.name), step))
  for _, step in sorted(found, key=lambda t: -t[0]):
    try:
      saved = json.loads((step / "config" / "metadata").read_text())
    except (OSError, ValueError):
      continue
    if isinstance(saved, dict) and saved:
      yield step, saved


def saved_run_config(workdir: str | os.PathLike) -> tuple[dict | None, str]:
  """The config dict a run saved and where it came from: `<workdir>/config.json`, or, when that
  file is missing, empty or not JSON (a kill while it was written), the newest checkpoint's copy.
  (None, reason) when neither exists."""
  import json  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(workdir) / "config.json"
  problem = "not found"
  if path.exists():
    try:
      saved = json.loads(path.read_text())
      if isinstance(saved, dict) and saved:
        return saved, str(path)
      problem = "empty"
    except (OSError, ValueError) as e:
      problem = f"not valid JSON ({e})"
  for step, saved in _checkpoint_configs(pathlib.Path(workdir)):
    return saved, f"{step} (its config.json is {problem})"
  return None, f"{path}: {problem}"


def write_run_config(workdir: str | os.PathLike, text: str) -> bool:
  """Writes `<workdir>/config.json` only when its content changes, atomically (a temporary file
  renamed over it), so a kill at this write never leaves it empty. Returns whether it wrote."""
  path = pathlib.Path(workdir) / "config.json"
  try:
    if path.read_text() == text:
      return False
  except (OSError, UnicodeDecodeError):
    pass
  tmp = path.with_name(f".config.json.tmp{os.getpid()}")
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  return True


def load_run_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
  """The resolved config a run saved (`saved_run_config`), validated against the schema."""
  saved, path = saved_run_config(workdir)
  if saved is None:
    raise ConfigError(f"{path}; --workdir must be a folder launch.py trained in.")
  cfg = base_config()

  def merge(dst, src, prefix=""):
    for k, v in src.items():
      if k not in dst:
        raise ConfigError(f"{path}: unknown field {prefix}{k}; written by another version?")
      if isinstance(dst[k], ml_collections.ConfigDict):
        merge(dst[k], v, f"{prefix}{k}.")
      elif isinstance(v, bool) and isinstance(dst[k], str):  # train.remat was a bool before
        dst[k] = REMAT_ALIASES.get(str(v), str(v))
      else:
        dst[k] = tuple(v) if isinstance(dst[k], tuple) else v

  merge(cfg, saved)
  if cfg.data.source == "ct_dir" and not (cfg.data.ct_dir and
                                          pathlib.Path(cfg.data.ct_dir).is_dir()):
    cfg.data.source = "phantom"  # the CT folder is not needed to use a trained model
  return validate(cfg)
