"""Shared references for the model tests."""

import numpy as np
import pytest


def _transposed_conv3d_stride2(x: np.ndarray, w: np.ndarray, padding: int) -> np.ndarray:
  """PyTorch's ConvTranspose3d at stride 2 by its definition, out[2 i + k - padding] += x[i] w[k]
  per axis, kept to the 2n outputs of the layers here (output_padding fills up to 2n); then ReLU.
  x: (1, X, Y, Z, Cin); w: (k, k, k, Cin, Cout) in PyTorch's tap order."""
  n = np.array(x.shape[1:4])
  k = w.shape[0]
  full = np.zeros((1, *(2 * (n - 1) + k + 1), w.shape[-1]))
  for i in np.ndindex(*n):
    for t in np.ndindex(k, k, k):
      full[(0, *(2 * np.array(i) + np.array(t)))] += x[(0, *i)] @ w[t]
  out = full[:, padding:padding + 2 * n[0], padding:padding + 2 * n[1], padding:padding + 2 * n[2]]
  return np.maximum(out, 0)


@pytest.fixture
def transposed_conv_reference():
  return _transposed_conv3d_stride2
