"""X2CT-GAN as published (models/x2ct.py): the official parameter counts, shapes, the up-conv."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cvaa_jax import models
from cvaa_jax.models import x2ct

# kylekma/X2CT, multiview_network_denseUNetFuse_transposed (d2_multiview2500), counted from that
# code's layer definitions: generator parameters at 64^3 and 128^3 inputs.
OFFICIAL = {64: 41_526_707, 128: 61_740_467}


def test_parameter_counts_are_the_official_ones_and_the_forward_has_the_volume_shape():
  for size, count in OFFICIAL.items():
    g = models.abstract(models.generator_ctor("x2ct_gan", models.GeneratorConfig(size=size)))
    total = models.param_table(g)[-1][1]
    assert abs(total - count) <= 0.01 * count, (size, total)
    assert total == count  # exact, in fact
  graphdef, state = nnx.split(g)
  spec = jax.ShapeDtypeStruct((1, 128, 128), jnp.float32)
  out, _ = jax.eval_shape(lambda s, a, b: nnx.merge(graphdef, s)(a, b), state, spec, spec)
  assert out.shape == (1, 128, 128, 128)


def test_up_convolution_is_pytorch_conv_transpose_k3_s2_p1_op1(transposed_conv_reference):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 3, 2, 4, 2)).astype(np.float32)
  w = rng.normal(size=(3, 3, 3, 2, 3)).astype(np.float32)  # PyTorch taps, (k, k, k, in, out)
  up = x2ct._Up3D(2, 3, rngs=nnx.Rngs(0))  # pylint: disable=protected-access
  up.kernel[...] = jnp.asarray(w[::-1, ::-1, ::-1])  # conv form = flipped transposed-conv taps
  up.norm = lambda y: y  # compare the convolution itself
  got = np.asarray(up(jnp.asarray(x)))
  ref = transposed_conv_reference(x, w, padding=1)
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
