"""The hybrid: soft tissue from one volume, the union of both skeletons, the choice by agreement."""

import numpy as np
import pytest

from cvaa_jax.fit import hybrid


def test_soft_tissue_from_the_chosen_volume_bone_from_both():
  net = np.array([40.0, 40.0, 900.0, 40.0])  # the network placed one bone voxel
  atl = np.array([-50.0, 800.0, 30.0, -900.0])  # the atlas another
  out = hybrid.combine(net, atl, soft_from="network")
  np.testing.assert_allclose(out[[1, 2]], [800.0, 900.0], atol=1.0)  # both skeletons kept
  np.testing.assert_allclose(out[[0, 3]], [40.0, 40.0], atol=1.0)  # soft tissue: the network's
  out = hybrid.combine(net, atl, soft_from="atlas")
  np.testing.assert_allclose(out[[1, 2]], [800.0, 900.0], atol=1.0)
  np.testing.assert_allclose(out[[0, 3]], [-50.0, -900.0], atol=2.0)  # 0.2 % bone weight at 40 HU
  with pytest.raises(ValueError):
    hybrid.combine(net, atl, soft_from="both")


def test_choice_follows_the_better_reprojection():
  good = {"frontal": {"ncc": 0.98}, "lateral": {"ncc": 0.96}}
  poor = {"frontal": {"ncc": 0.99}, "lateral": {"ncc": 0.90}}
  assert hybrid.choose_soft(network_agreement=poor, atlas_agreement=good) == "atlas"
  assert hybrid.choose_soft(network_agreement=good, atlas_agreement=poor) == "network"
