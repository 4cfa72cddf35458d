"""The hybrid reconstruction: the network's and the atlases' volumes, each where it is better.

  * soft tissue (the body outline, organs, gas, density): from whichever of the two volumes agrees
    better with the two radiographs (mean re-projection NCC over the views, fit/refine.py), a
    choice that needs no ground truth. In leave-one-out (benchmarks/atlas_loo.py) the atlases win
    it on chests similar to theirs and the network on the abdomen and pelvis, where the atlases
    are few;
  * bone: the union of both skeletons,
        w = max(s(atlas_hu), s(network_hu)),  s(h) = sigmoid((h - bone_hu) / width_hu)
        hybrid = (1 - w) * soft + w * max(atlas_hu, network_hu)
    the atlases bring the skeleton the network misses (ribs, vertebrae, pelvis), the network keeps
    the bone it did place.
"""

from __future__ import annotations

import numpy as np


def _bone_weight(hu: np.ndarray, bone_hu: float, width_hu: float) -> np.ndarray:
  return 1.0 / (1.0 + np.exp(-(hu - bone_hu) / width_hu))


def combine(network_hu: np.ndarray, atlas_hu: np.ndarray, soft_from: str = "network",
            bone_hu: float = 200.0, width_hu: float = 25.0) -> np.ndarray:
  """(S, S, S) HU: soft tissue from `soft_from` ('network' or 'atlas'), bone from both."""
  if soft_from not in ("network", "atlas"):
    raise ValueError(f"soft_from={soft_from!r}: use 'network' or 'atlas'")
  net = np.asarray(network_hu, np.float32)
  atl = np.asarray(atlas_hu, np.float32)
  soft = net if soft_from == "network" else atl
  w = np.maximum(_bone_weight(atl, bone_hu, width_hu), _bone_weight(net, bone_hu, width_hu))
  return ((1.0 - w) * soft + w * np.maximum(atl, net)).astype(np.float32)


def choose_soft(network_agreement: dict, atlas_agreement: dict) -> str:
  """'atlas' when the atlas volume's mean re-projection NCC is higher, else 'network'."""
  mean = lambda a: float(np.mean([a[v]["ncc"] for v in ("frontal", "lateral")]))
  return "atlas" if mean(atlas_agreement) > mean(network_agreement) else "network"
