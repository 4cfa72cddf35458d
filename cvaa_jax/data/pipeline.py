"""Grain pipelines over a prepared dataset (see dataset.py): cached model-grid volumes in, batches out.

DRRs are rendered on the accelerator inside the train step (`cvaa_jax.train.step.render_views`),
not in the Grain workers: the Joseph projector is two matrix products that fuse into the compiled
step, so the host ships one volume per case instead of volume + two images, and the workers only
read and augment (measured in benchmarks/pipeline.py).

Sources and transforms live at module level so worker processes can unpickle them.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import grain
import jax
import numpy as np

from cvaa_jax.data import augment as augment_lib
from cvaa_jax.data.io import load_npy
from cvaa_jax.data.dataset import Case


class VolumeSource:
  """Random-access source of cached volumes: {'volume': (S, S, S) float32 in [0, 1], 'index'},
  plus the case's own 'frontal' and 'lateral' images (S, S) when the data came as pairs."""

  def __init__(self, paths: Sequence[str], xray_paths: Sequence | None = None):
    self.paths = [str(p) for p in paths]
    self.xray_paths = [tuple(str(x) for x in xp) for xp in xray_paths] if xray_paths else None

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int):
    out = {"volume": load_npy(self.paths[index]).astype(np.float32), "index": np.int32(index)}
    if self.xray_paths:
      out["frontal"], out["lateral"] = (load_npy(p).astype(np.float32)
                                        for p in self.xray_paths[index])
    return out


@dataclasses.dataclass
class RandomShift(grain.transforms.RandomMap):
  """Translates the volume by up to `max_voxels` per axis (zero = air fills in): pose augmentation
  that keeps X-ray and CT consistent because the X-rays are rendered from the shifted CT."""

  max_voxels: int = 0

  def random_map(self, element, rng: np.random.Generator):
    if self.max_voxels <= 0:
      return element
    vol = element["volume"]
    shift = rng.integers(-self.max_voxels, self.max_voxels + 1, size=3)
    out = np.zeros_like(vol)
    src = tuple(slice(max(0, -s), vol.shape[a] - max(0, s)) for a, s in enumerate(shift))
    dst = tuple(slice(max(0, s), vol.shape[a] - max(0, -s)) for a, s in enumerate(shift))
    out[dst] = vol[src]
    return {**element, "volume": out}


class ProcessBlocks(grain.MapDataset):
  """This process's part of every global batch: element i is global element
  (i // b) * B + p * b + i % b for per-process batch b, global batch B = b * P, process p. The
  processes' batches then stack, in process order, into exactly the global batch one process would
  read (same cases, same order), and every element is read by one process only."""

  def __init__(self, parent: grain.MapDataset, per_process: int, process_index: int,
               process_count: int):
    super().__init__(parent)
    self._b, self._p, self._n = per_process, process_index, process_count

  def __len__(self) -> int:
    return (len(self._parent) // (self._b * self._n)) * self._b

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    g, j = divmod(index, self._b)
    return self._parent[g * self._b * self._n + self._p * self._b + j]


def _branch(source, seed: int, num_epochs: int | None, transform) -> grain.MapDataset:
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat(num_epochs)
  return ds.random_map(transform)


def train_dataset(cases: Sequence[Case], batch_size: int, seed: int, num_epochs: int | None = None,
                  shift_voxels: int = 0, num_workers: int = 0,
                  process_index: int | None = None, process_count: int | None = None,
                  augment: augment_lib.AugmentConfig | None = None, phantom_share: float = 0.0
                  ) -> grain.IterDataset:
  """Shuffled (reshuffled every epoch), augmented, batched training volumes of this process.

  Real CTs with a cached scan and an active `augment` are cut afresh from their whole scan for
  every sample (data/augment.py); other cases come from their cached crop, shifted by up to
  `shift_voxels`. With phantoms among the training cases (a 'ct_dir' run with
  `config.data.phantom_share` > 0) the real and the phantom streams are shuffled and augmented
  separately, then interleaved so a share `phantom_share` of the samples are phantoms.

  `batch_size` is the per-process batch; each process reads its own block of every global batch
  (`ProcessBlocks`), so a multi-host run feeds disjoint data to each host and its global batches
  equal a single process's. Augmentation draws are keyed on each stream's element index, so they do
  not depend on the process count either.
  """
  train = [c for c in cases if c.split == "train"]
  if not train:
    raise ValueError("train_dataset: the split holds no training cases; add data or change "
                     "config.data.split.")
  xrays = [c.xray_paths for c in train] if all(c.xray_paths for c in train) else None
  if xrays:
    shift_voxels = 0  # the user's images are fixed: shifting the CT would break the pairing
  pi = jax.process_index() if process_index is None else process_index
  pc = jax.process_count() if process_count is None else process_count
  real = [c for c in train if not c.is_phantom]
  phantoms = [c for c in train if c.is_phantom]
  if not (real and phantoms):  # one stream: the cases as they are
    real, phantoms, phantom_share = train, [], 0.0

  def stream(group, stream_seed):
    if augment is not None and augment.active and all(c.scan for c in group):
      return _branch(augment_lib.ScanSource([c.scan for c in group]), stream_seed, num_epochs,
                     augment_lib.CutVolume(augment))
    group_xrays = [c.xray_paths for c in group] if xrays else None
    return _branch(VolumeSource([c.path for c in group], group_xrays), stream_seed, num_epochs,
                   RandomShift(shift_voxels))

  ds = stream(real, seed)
  if phantoms and phantom_share > 0:
    ds = grain.MapDataset.mix([ds, stream(phantoms, seed + 1)],
                              weights=[1.0 - phantom_share, phantom_share])
  if pc > 1:
    ds = ProcessBlocks(ds, batch_size, pi, pc)
  ds = ds.batch(batch_size, drop_remainder=True)
  it = ds.to_iter_dataset()
  if num_workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return it


def eval_batches(cases: Sequence[Case], split: str, batch_size: int):
  """Deterministic, unshuffled batches of one split (last batch padded by repetition; `valid`
  marks the real entries). Yields dicts with 'volume', 'valid' and 'case_id' lists."""
  chosen = [c for c in cases if c.split == split]
  for start in range(0, len(chosen), batch_size):
    part = chosen[start:start + batch_size]
    valid = [True] * len(part) + [False] * (batch_size - len(part))
    part = part + [part[-1]] * (batch_size - len(part))
    batch = {"volume": np.stack([np.asarray(c.load(), np.float32) for c in part]),
             "valid": np.asarray(valid), "case_id": [c.case_id for c in part]}
    if all(c.xray_paths for c in part):
      for i, view in enumerate(("frontal", "lateral")):
        batch[view] = np.stack([np.load(c.xray_paths[i]).astype(np.float32) for c in part])
    yield batch
