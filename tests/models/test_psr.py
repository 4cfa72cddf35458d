"""PSR as published (models/psr.py): the official parameter counts, the output shape, the up-conv."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cvaa_jax import models
from cvaa_jax.models import psr


def _official_count(size: int) -> int:
  """liyues/PatRecon net.py, ReconNet(in_channels=1, out_channels=size), counted from its layer
  list: bias-free convs, batch norm (2 parameters per channel) where the code has one."""
  total, prev = 0, 1
  for i, c in enumerate((256, 512, 1024, 2048, 4096)):  # conv_layer1..10
    total += 16 * prev * c + (2 * c if i else 0) + 9 * c * c + 2 * c
    prev = c
  total += 4096 * 4096 + 2048 * 2048  # trans_layer1 (1x1), trans_layer2 (1x1x1)
  prev = 2048
  for i, c in enumerate((1024, 512, 256, 128, 64)):  # deconv_layer10..1
    total += 64 * prev * c + 2 * c + (27 * c * c + 2 * c if i else 0)
    prev = c
  return total + 64 + 64 * size  # deconv_layer0 (64 -> 1), output_layer (64 -> size)


def test_parameter_counts_are_the_official_ones_and_the_output_is_the_volume():
  assert _official_count(128) == 588_591_424
  for size in (64, 128):
    g = models.abstract(models.generator_ctor("psr", models.GeneratorConfig(size=size)))
    assert models.param_table(g)[-1][1] == _official_count(size), size
  graphdef, state = nnx.split(g)
  spec = jax.ShapeDtypeStruct((2, 128, 128), jnp.float32)
  out, _ = jax.eval_shape(lambda s, a, b: nnx.merge(graphdef, s)(a, b), state, spec, spec)
  assert out.shape == (2, 128, 128, 128)


def test_small_volumes_are_refused_with_the_light_variant_named():
  with pytest.raises(ValueError, match="psr_light"):
    models.abstract(models.generator_ctor("psr", models.GeneratorConfig(size=32)))


def test_up_convolution_is_pytorch_conv_transpose_k4_s2_p1(transposed_conv_reference):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 3, 2, 2, 2)).astype(np.float32)
  w = rng.normal(size=(4, 4, 4, 2, 3)).astype(np.float32)  # PyTorch taps, (k, k, k, in, out)
  up = psr._Up3D(2, 3, rngs=nnx.Rngs(0))  # pylint: disable=protected-access
  up.kernel[...] = jnp.asarray(w[::-1, ::-1, ::-1])  # conv form = flipped transposed-conv taps
  up.norm = lambda y: y  # compare the convolution itself
  got = np.asarray(up(jnp.asarray(x)))
  ref = transposed_conv_reference(x, w, padding=1)
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
