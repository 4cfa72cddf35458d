"""Models: shapes and ranges, attention maps, gradient flow, layer numerics, geometric alignment."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cvaa_jax import drr, models
from cvaa_jax.models import layers, projection

TINY = dict(levels=2, base_channels=8, max_channels=16, base_channels_3d=4, max_channels_3d=8,
            growth_rate=4, dense_layers=2, attn_kernel=3)


def _cfg(size=16, **kw):
  return models.GeneratorConfig(size=size, **{**TINY, **kw})


def _inputs(size, batch=2, seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return jax.random.uniform(k1, (batch, size, size)), jax.random.uniform(k2, (batch, size, size))


CASES = [("cvaa_gan", {"fusion": f}) for f in ("add", "concat", "vaa", "cvaa")] + \
    [(name, {}) for name in ("x2ct_gan_light", "3dcnn", "psr_light")]
_BUILT = {}


def _built(name, size=16, **kw):
  """(model, jitted forward) per configuration, built once per test process."""
  key = (name, size, tuple(sorted(kw.items())))
  if key not in _BUILT:
    g = models.create(models.generator_ctor(name, _cfg(size, **kw)))
    graphdef, state = nnx.split(g)
    fwd = jax.jit(lambda s, a, b: nnx.merge(graphdef, s)(a, b))
    _BUILT[key] = (g, lambda a, b: fwd(state, a, b))
  return _BUILT[key]


@pytest.mark.parametrize("name,kw", CASES, ids=[f"{n}-{k.get('fusion', '')}" for n, k in CASES])
def test_every_model_maps_two_views_to_a_unit_volume(name, kw):
  _, fwd = _built(name, 16, **kw)
  f, l = _inputs(16)
  out, aux = fwd(f, l)
  assert out.shape == (2, 16, 16, 16) and out.dtype == jnp.float32
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  assert np.isfinite(np.asarray(out)).all()
  if kw.get("fusion") in ("vaa", "cvaa"):
    for lvl, s in ((0, 16), (1, 8)):
      w = np.asarray(aux[f"vaa/level{lvl}"])
      assert w.shape == (2, s, s, s, 2)
      np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
      assert w.min() > 0
    if kw["fusion"] == "cvaa":
      gate = np.asarray(aux["fd/level0"])
      assert gate.min() > 0 and gate.max() < 1
    else:
      assert not any(k.startswith("fd/") for k in aux)
  else:
    assert aux == {}


def test_psr_is_single_view_and_others_use_both_views():
  f, l = _inputs(16)
  for name, kw, uses_lateral in (("psr_light", {}, False), ("cvaa_gan", {"fusion": "cvaa"}, True)):
    _, fwd = _built(name, 16, **kw)
    a = fwd(f, l)[0]
    b = fwd(f, l[::-1])[0]
    assert bool(jnp.any(jnp.abs(a - b) > 1e-6)) == uses_lateral, name


def test_larger_size_and_discriminator_patch_map():
  cfg = _cfg(32)
  g = models.create(models.generator_ctor("cvaa_gan", cfg))
  f, l = _inputs(32, batch=1)
  out, _ = jax.jit(lambda a, b: g(a, b))(f, l)
  assert out.shape == (1, 32, 32, 32)
  d = models.create(models.discriminator_ctor(cfg, base_channels=4, n_layers=2))
  assert jax.jit(lambda a, b, v: d(a, b, v))(f, l, out).shape == (1, 8, 8, 8)


def test_add_fusion_has_no_attention_parameters():
  add = _built("cvaa_gan", 16, fusion="add")[0]
  cvaa = _built("cvaa_gan", 16, fusion="cvaa")[0]
  paths = lambda m: {"/".join(str(getattr(k, "key", k)) for k in p)
                     for p, _ in jax.tree_util.tree_flatten_with_path(nnx.state(m, nnx.Param))[0]}
  assert not any(p.startswith("fusions") for p in paths(add))
  assert any("align1" in p for p in paths(cvaa)) and any("gate" in p for p in paths(cvaa))
  rows = dict(models.param_table(cvaa))
  assert rows["total"] == sum(v for k, v in rows.items() if k != "total")


def test_gradients_reach_both_encoders_and_every_fusion_parameter():
  g = _built("cvaa_gan", 16, fusion="cvaa")[0]
  graphdef, params = nnx.split(g, nnx.Param)
  f, l = _inputs(16)
  target = jax.random.uniform(jax.random.key(3), (2, 16, 16, 16))

  def loss(p):
    out, _ = nnx.merge(graphdef, p)(f, l)
    return jnp.mean((out - target) ** 2)

  grads = jax.jit(jax.grad(loss))(params)
  dead = [jax.tree_util.keystr(p) for p, x in jax.tree_util.tree_flatten_with_path(grads)[0]
          if not float(jnp.abs(x).max()) > 0]
  assert not dead, dead
  flat = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(grads)[0]}
  assert any("encoders'][0]" in p for p in flat) and any("encoders'][1]" in p for p in flat)


@pytest.mark.parametrize("k,stride,pad", [(3, 1, None), (1, 1, None), (4, 2, 1), (7, 1, None),
                                          (3, 2, 1), (3, 1, 0), (4, 1, 1)])
@pytest.mark.parametrize("cout", [2, 5])  # 2: 'folded' stacks the taps (TAP_STACK_MAX_OUT)
def test_folded_and_sliced_conv3d_match_native_with_their_gradients(k, stride, pad, cout):
  x = jax.random.normal(jax.random.key(0), (2, 9, 10, 8, 3))
  w = jax.random.normal(jax.random.key(1), (k, k, k, 3, cout))
  ct = None
  for impl in ("native", "folded", "sliced"):
    out = layers.conv3d(x, w, stride, pad, impl=impl)
    if ct is None:
      ct = jax.random.normal(jax.random.key(2), out.shape)
      ref = (out, jax.grad(lambda x, w: jnp.sum(ct * layers.conv3d(x, w, stride, pad, "native")),
                           argnums=(0, 1))(x, w))
      continue
    grads = jax.grad(lambda x, w, i=impl: jnp.sum(ct * layers.conv3d(x, w, stride, pad, i)),
                     argnums=(0, 1))(x, w)
    assert out.shape == ref[0].shape, impl
    np.testing.assert_allclose(out, ref[0], rtol=1e-4, atol=1e-4)
    for g, r in zip(grads, ref[1]):
      np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-3)


def test_upconv_is_a_stride_two_transposed_convolution():
  up = models.create(lambda rngs: layers.UpConv3D(3, 4, rngs=rngs))
  x = jax.random.normal(jax.random.key(0), (1, 3, 4, 5, 3))
  kern = up.dense.kernel[...].reshape(3, 2, 2, 2, 4).transpose(1, 2, 3, 0, 4)  # (2,2,2,in,out)
  # lax.conv_transpose correlates the dilated input, i.e. applies the taps mirrored.
  ref = jax.lax.conv_transpose(x, kern[::-1, ::-1, ::-1], (2, 2, 2), "VALID",
                               dimension_numbers=("NDHWC", "DHWIO", "NDHWC"), transpose_kernel=False)
  np.testing.assert_allclose(up(x), ref + up.bias[...], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("parallel", [True, False])
def test_back_projection_of_a_bright_voxel_passes_through_it(parallel):
  """Render one bright voxel with the DRR renderer, lift both views with the model's expansion:
  the two back-projected rays meet at that voxel."""
  n, fov = 32, 256.0
  voxel = (22, 9, 25)  # right, posterior, superior of centre (RAS indices)
  vol = jnp.zeros((n, n, n)).at[voxel].set(1.0)
  spacing, origin = projection.grid(n, fov)
  specs = projection.views_for(parallel=parallel, fov_mm=fov)
  lifted = []
  for spec in specs:
    img = drr.project(vol, spacing, origin, spec.geometry(n))
    assert float(img.max()) > 0
    back = projection.expand(img[None, :, :, None], spec)[0, ..., 0]
    lifted.append(back)
    # In the voxel's own slice along the view's ray axis, the back-projection peaks at the voxel.
    p = spec.geometry(n).aligned_axis
    in_slice = np.asarray(jnp.take(back, voxel[p], axis=p))
    expect = tuple(v for a, v in enumerate(voxel) if a != p)
    assert np.unravel_index(int(in_slice.argmax()), in_slice.shape) == expect, spec.view
  meet = np.asarray(lifted[0] * lifted[1])
  found = np.unravel_index(int(meet.argmax()), meet.shape)
  tol = 0 if parallel else 1  # cone beam: the DRR spreads a voxel over neighbouring pixels
  assert max(abs(a - b) for a, b in zip(found, voxel)) <= tol, (found, voxel)
  if parallel:  # parallel rays: the frontal back-projection is constant along y through the voxel
    ap_line = np.asarray(lifted[0][voxel[0], :, voxel[2]])
    np.testing.assert_allclose(ap_line, ap_line.max())


def test_paper_size_model_traces_at_128_without_allocating():
  cfg = models.GeneratorConfig(size=128)
  g = models.abstract(models.generator_ctor("cvaa_gan", cfg))
  x = jax.ShapeDtypeStruct((4, 128, 128), jnp.float32)
  out, aux = nnx.eval_shape(lambda m, a, b: m(a, b), g, x, x)
  assert out.shape == (4, 128, 128, 128)
  assert aux["vaa/level0"].shape == (4, 128, 128, 128, 2)
  total = dict(models.param_table(g))["total"]
  assert 1e6 < total < 1e8, total


def test_resize_upsampling_has_no_checkerboard_and_matches_trilinear():
  """'resize' up-sampling: a constant input stays constant (a kernel-2 transposed convolution
  gives a 2-voxel period), and the resize equals jax.image.resize's trilinear ×2."""
  from cvaa_jax.models import layers
  rngs = nnx.Rngs(0)
  up = layers.ResizeUp3D(3, 2, rngs=rngs)
  const = jnp.ones((1, 4, 4, 4, 3))
  y = np.asarray(up(const))
  assert y.shape == (1, 8, 8, 8, 2)
  np.testing.assert_allclose(y, np.broadcast_to(y[:, :1, :1, :1], y.shape), rtol=1e-6)
  t = np.asarray(layers.UpConv3D(3, 2, rngs=rngs)(const))
  assert np.ptp(t[..., 0]) > 1e-3  # the transposed convolution's period, for contrast
  x = jax.random.normal(jax.random.key(1), (1, 4, 5, 6, 3))
  ref = jax.image.resize(up.dense(x), (1, 8, 10, 12, 2), "trilinear")
  np.testing.assert_allclose(np.asarray(up(x)), np.asarray(ref), atol=1e-5)
  with pytest.raises(ValueError, match="model.upsample"):
    layers.make_up("bicubic", 3, 2, rngs=rngs)


def test_generator_with_resize_upsampling_runs():
  from cvaa_jax.models import registry
  cfg = registry.make_config(size=16, levels=2, base_channels=4, max_channels=8,
                             base_channels_3d=4, max_channels_3d=8, growth_rate=4,
                             dense_layers=1, attn_kernel=3, upsample="resize")
  gen = registry.generator_ctor("cvaa_gan", cfg)(nnx.Rngs(0))
  vol, _ = gen(jnp.zeros((1, 16, 16)), jnp.zeros((1, 16, 16)))
  assert vol.shape == (1, 16, 16, 16) and np.isfinite(np.asarray(vol)).all()


def test_per_block_remat_gives_the_same_gradients():
  """remat_blocks (train.remat='blocks') only changes what is stored for the backward pass."""
  import dataclasses
  from cvaa_jax.models.discriminator import PatchDiscriminator3D
  cfg = _cfg(16, dense_layers=1, max_channels=8)
  x, y = _inputs(16)
  geo = jnp.array([[1 / 750, 1 / 750], [-1 / 700, 1 / 800]])
  vol = jax.random.uniform(jax.random.key(3), (2, 16, 16, 16))
  for build, call in ((models.CVAAGenerator, lambda m: m(x, y, geo)[0]),
                      (lambda c, rngs: PatchDiscriminator3D(c, 4, 2, rngs=rngs),
                       lambda m: m(x, y, vol, geo))):
    grads = []
    for remat in (False, True):
      graphdef, state = nnx.split(build(dataclasses.replace(cfg, remat_blocks=remat),
                                        rngs=nnx.Rngs(0)))
      loss = lambda s, gd=graphdef: jnp.sum(call(nnx.merge(gd, s)) ** 2)
      if remat:
        assert "remat" in str(jax.make_jaxpr(jax.grad(loss))(state))
      grads.append(jax.jit(jax.grad(loss))(state))
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_conv3d_of_concatenation_parts_equals_conv_of_the_concatenation():
  """Conv3D takes a concatenation's parts (the native form sums per-part convolutions)."""
  conv = layers.Conv3D(5, 3, 3, rngs=nnx.Rngs(0))
  parts = [jax.random.normal(jax.random.key(i), (1, 6, 5, 4, c)) for i, c in enumerate((2, 3))]
  ref = conv(jnp.concatenate(parts, -1))
  for impl in ("native", "folded"):
    conv.impl = impl
    np.testing.assert_allclose(conv(parts), ref, rtol=1e-4, atol=1e-4)
    g = jax.grad(lambda ps: jnp.sum(conv(ps) ** 2))(parts)
    g_ref = jax.grad(lambda x: jnp.sum(conv(x) ** 2))(jnp.concatenate(parts, -1))
    np.testing.assert_allclose(jnp.concatenate(g, -1), g_ref, rtol=1e-4, atol=1e-3)


def test_initialiser_draws_are_the_same_without_loops():
  """`models.create` lowers its random draws as straight-line code (faster to load from the
  compilation cache); the initial weights must be bit-identical to JAX's default lowering, and
  the restored default must be in place afterwards."""
  from cvaa_jax.models import registry  # pylint: disable=g-import-not-at-top
  ctor = models.generator_ctor("cvaa_gan", _cfg(16))
  fresh = jax.tree.leaves(nnx.split(models.create(ctor, seed=3))[1])
  reference = jax.tree.leaves(jax.jit(lambda: nnx.split(ctor(nnx.Rngs(3)))[1])())  # JAX's own
  assert len(fresh) == len(reference) > 10
  for a, b in zip(fresh, reference):
    np.testing.assert_array_equal(np.asarray(a).view(np.uint32), np.asarray(b).view(np.uint32))
  init = lambda: jax.jit(lambda: nnx.split(ctor(nnx.Rngs(3)))[1]).lower().as_text()
  with registry._straight_line_threefry() as active:  # pylint: disable=protected-access
    straight = init()
  after = init()
  if jax.default_backend() == "cpu" and active:
    assert "while" not in straight and "while" in after  # loops only inside the block
