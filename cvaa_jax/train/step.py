"""The GAN training step: one state pytree, alternating D then G updates, in one compiled program.

`TrainState` holds both players' parameters (pure dicts), both optimiser states, the generator's
EMA, the step, the base PRNG key (raw key data, so checkpoints are plain arrays) and the first step
whose loss or gradient was non-finite (-1 while all is well). The per-step key is
`fold_in(key, step)`, so a resumed run replays exactly.

Data parallelism has pmap's semantics through `jax.jit` on a 1-D device mesh (axis 'data'): the
state is replicated, the global batch is split along 'data', and because every loss is a mean over
the global batch, XLA inserts the cross-device gradient averaging (no explicit pmean, which under
shard_map's checks would average twice).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from cvaa_jax import drr
from cvaa_jax.drr import augment
from cvaa_jax.models import projection
from cvaa_jax.train import losses


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  g_params: Any
  d_params: Any
  g_opt: Any
  d_opt: Any
  ema_params: Any
  key: jax.Array
  bad_step: jax.Array


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """Static pieces of the step: graphdefs, optimisers, rendering, loss weights."""

  g_graphdef: Any
  d_graphdef: Any
  g_tx: optax.GradientTransformation
  d_tx: optax.GradientTransformation
  views: tuple  # (frontal, lateral) ViewSpec
  size: int
  hu_min: float
  hu_max: float
  w_adv: float = 0.1
  w_recon: float = 10.0
  w_proj: float = 10.0
  w_window: float = 0.0  # soft-tissue/bone window L1 (losses.window_l1); 0: off (the paper)
  window_hu: tuple = (-200.0, 1000.0)
  w_bone: float = 0.0  # extra MSE weight on the target's bone voxels (losses.bone_mse); 0: off
  bone_hu: float = 150.0
  ema_decay: float = 0.999
  noise_photons: float = 0.0
  intensity_gain: float = 0.0
  intensity_gamma: float = 0.0
  remat: bool = False
  accum_steps: int = 1  # micro-batches per step, run one after another (config train.microbatch)
  accum_form: str = "auto"  # how they run: 'scan', 'unrolled', 'auto' (accumulation_form)
  sid_range: tuple = (0.0, 0.0)  # per-sample geometry (config.drr); all off: the views' fixed one
  parallel_share: float = 0.0
  opposite_side_share: float = 0.0

  @property
  def random_geometry(self) -> bool:
    return self.sid_range[1] > 0 or self.parallel_share > 0 or self.opposite_side_share > 0


def sample_geometry(cfg: StepConfig, key: jax.Array, batch: int) -> jax.Array:
  """(B, 2) signed inverse source distances, one per sample and view (models/projection.py)."""
  k_sid, k_par, k_side = jax.random.split(key, 3)
  if cfg.sid_range[1] > 0:
    lo, hi = 1.0 / cfg.sid_range[1], 1.0 / cfg.sid_range[0]
    kappa = jax.random.uniform(k_sid, (batch, 2), minval=lo, maxval=hi)
  else:
    kappa = jnp.asarray([[spec.inv_sid for spec in cfg.views]] * batch, jnp.float32)
  kappa = jnp.where(jax.random.uniform(k_par, (batch, 2)) < cfg.parallel_share, 0.0, kappa)
  side = jnp.where(jax.random.uniform(k_side, (batch, 2)) < cfg.opposite_side_share, -1.0, 1.0)
  return kappa * side


def g_apply(cfg: StepConfig, params, frontal, lateral, geometry=None):
  return nnx.merge(cfg.g_graphdef, params)(frontal, lateral, geometry)


def d_apply(cfg: StepConfig, params, frontal, lateral, volume, geometry=None):
  return nnx.merge(cfg.d_graphdef, params)(frontal, lateral, volume, geometry)


def render_views(cfg: StepConfig, volume: jax.Array, key: jax.Array | None = None,
                 geometry: jax.Array | None = None):
  """(B, S, S, S) [0, 1] volumes -> normalised (frontal, lateral) DRRs (B, S, S), optionally with
  the configured detector noise and intensity variation (training only, `key` given).

  `geometry` (B, 2): per-sample canonical views (signed inverse source distances) instead of the
  fixed ones; rendered through traced geometries (the projector's dense path)."""
  spacing, origin = projection.grid(cfg.size, cfg.views[0].fov_mm)
  mu = drr.unit_to_mu(volume, cfg.hu_min, cfg.hu_max)
  out = []
  for i, spec in enumerate(cfg.views):
    if geometry is None:
      g = spec.geometry(cfg.size)
      img = jax.vmap(lambda m, g=g: drr.project(m, spacing, origin, g))(mu)
    else:
      img = jax.vmap(lambda m, k, spec=spec: drr.project(m, spacing, origin, projection.canonical_geometry(
          spec.view, cfg.size, spec.fov_mm, k)))(mu, geometry[:, i])
    if key is not None and cfg.noise_photons > 0:
      img = augment.poisson_noise(img, jax.random.fold_in(key, 10 + i), cfg.noise_photons)
    img = drr.normalize_projection(img)
    if key is not None and (cfg.intensity_gain > 0 or cfg.intensity_gamma > 0):
      img = augment.intensity_variation(img, jax.random.fold_in(key, 20 + i), cfg.intensity_gain,
                                        cfg.intensity_gamma)
    out.append(img)
  return tuple(out)


def _strong(tree):
  """Drops weak types, so the step's output state has exactly the input's types (no recompiles)."""
  return jax.tree.map(lambda x: jnp.array(x, dtype=x.dtype), tree)


def init_state(cfg: StepConfig, g_params, d_params, seed: int) -> TrainState:
  g_params, d_params = _strong(g_params), _strong(d_params)
  return TrainState(step=jnp.zeros((), jnp.int32), g_params=g_params, d_params=d_params,
                    g_opt=cfg.g_tx.init(g_params), d_opt=cfg.d_tx.init(d_params),
                    ema_params=jax.tree.map(jnp.copy, g_params),
                    key=jax.random.key_data(jax.random.key(seed)),
                    bad_step=jnp.full((), -1, jnp.int32))


def _norm(tree) -> jax.Array:
  """Global L2 norm (a logged diagnostic) as one reduction over the concatenated leaves: XLA:CPU
  emits a reduction per leaf for `optax.global_norm`, ~300 of the demo step's 2700 fusions, and
  each costs time when the step is loaded from the compilation cache."""
  flat = jnp.concatenate([jnp.ravel(x).astype(jnp.float32) for x in jax.tree.leaves(tree)])
  return jnp.sqrt(jnp.sum(flat * flat))


def _d_loss(cfg: StepConfig, d_params, x: dict, fake: jax.Array):
  """LSGAN discriminator loss: real -> 1, fake -> 0 (the generated volume held fixed)."""
  real_s = d_apply(cfg, d_params, x["frontal"], x["lateral"], x["volume"], x.get("geometry"))
  fake_s = d_apply(cfg, d_params, x["frontal"], x["lateral"], jax.lax.stop_gradient(fake),
                   x.get("geometry"))
  real_l, fake_l = losses.lsgan_d(real_s, fake_s)
  return 0.5 * (real_l + fake_l), (real_l, fake_l)


def _g_loss(cfg: StepConfig, d_params, x: dict, fake_volume: jax.Array):
  """Generator loss: fool D, match the voxels and the three orthogonal projections."""
  volume = x["volume"]
  adv = losses.lsgan_g(d_apply(cfg, d_params, x["frontal"], x["lateral"], fake_volume,
                               x.get("geometry")))
  recon = losses.voxel_mse(fake_volume, volume)
  proj = losses.projection_l1(fake_volume, volume)
  total = cfg.w_adv * adv + cfg.w_recon * recon + cfg.w_proj * proj
  to_unit = lambda hu: (hu - cfg.hu_min) / (cfg.hu_max - cfg.hu_min)
  window = bone = jnp.zeros((), total.dtype)
  if cfg.w_window:
    window = losses.window_l1(fake_volume, volume, *(to_unit(h) for h in cfg.window_hu))
    total = total + cfg.w_window * window
  if cfg.w_bone:
    bone = losses.bone_mse(fake_volume, volume, to_unit(cfg.bone_hu))
    total = total + cfg.w_bone * bone
  return total, (adv, recon, proj, window, bone)


def _generator(cfg: StepConfig, x: dict):
  gen = lambda p: g_apply(cfg, p, x["frontal"], x["lateral"], x.get("geometry"))[0]
  return jax.checkpoint(gen) if cfg.remat else gen


def split_micro(tree, k: int):
  """(B, ...) leaves -> (k, B/k, ...): micro-batch j holds samples j, j + k, j + 2k, ...

  With the batch sharded over 'data' in contiguous blocks of B/D samples, this takes the same
  number of samples from every device's block, so each device works on its own samples (the
  reshape and transpose are local; no batch data moves between devices)."""
  return jax.tree.map(
      lambda a: jnp.swapaxes(a.reshape((a.shape[0] // k, k) + a.shape[1:]), 0, 1), tree)


def _update(tx: optax.GradientTransformation, grads, opt_state, params, opt_args: dict):
  """(new params, new optimiser state) after one step of `tx`."""
  updates, opt_state = tx.update(grads, opt_state, params, **opt_args)
  return optax.apply_updates(params, updates), opt_state


def _grads_and_losses(cfg: StepConfig, state: TrainState, x: dict, opt_args: dict):
  """The D update then the G gradients on the whole batch at once (accum_steps == 1)."""
  fake, g_vjp = jax.vjp(_generator(cfg, x), state.g_params)
  (d_total, d_aux), d_grads = jax.value_and_grad(
      lambda p: _d_loss(cfg, p, x, fake), has_aux=True)(state.d_params)
  d_params, d_opt = _update(cfg.d_tx, d_grads, state.d_opt, state.d_params, opt_args)
  (g_total, g_aux), dfake = jax.value_and_grad(
      lambda f: _g_loss(cfg, d_params, x, f), has_aux=True)(fake)
  (g_grads,) = g_vjp(dfake)
  return d_params, d_opt, d_grads, (d_total, d_aux), g_grads, (g_total, g_aux)


def accumulation_form(form: str = "auto") -> str:
  """How micro-batches run one after another: 'scan' (a `lax.scan` loop) or 'unrolled' (one copy
  per micro-batch, each fenced after the previous one). 'auto': 'unrolled' on CPU, 'scan'
  elsewhere.

  XLA:CPU leaves the convolutions inside a loop body in layouts its fast kernels do not take
  (`cvaa_gan-add` at 32^3, batch 4 in 4 passes: 9.26 s per step as a loop, 0.63 s unrolled,
  0.57-0.61 s in one pass), and its buffer assignment
  does not reuse the passes' memory when unrolled (XLA's memory analysis: no lower than one
  pass; benchmarks/RESULTS.md). So on CPU micro-batching buys speed, where the 64^3 one-pass step
  outgrows the caches, and the loop that lowers the memory peak is the accelerators' form."""
  if form == "auto":
    return "unrolled" if jax.default_backend() == "cpu" else "scan"
  if form not in ("scan", "unrolled"):
    raise ValueError(f"accumulation form {form!r}: use 'auto', 'scan' or 'unrolled'")
  return form


def _sequential(body, carry, xs, k: int, form: str):
  """`lax.scan(body, carry, xs)` over the k micro-batches in the given `accumulation_form`.

  Unrolled, XLA could run the passes side by side; the optimisation barrier hands pass j its
  inputs only together with pass j - 1's carry, so the passes run in order."""
  if accumulation_form(form) == "scan":
    return jax.lax.scan(body, carry, xs)
  outs = []
  for j in range(k):
    carry, xj = jax.lax.optimization_barrier((carry, jax.tree.map(lambda a, j=j: a[j], xs)))
    carry, out = body(carry, xj)
    outs.append(out)
  return carry, jax.tree.map(lambda *a: jnp.stack(a), *outs)


def _grads_and_losses_accumulated(cfg: StepConfig, state: TrainState, x: dict, opt_args: dict):
  """The same update from `cfg.accum_steps` micro-batches, one after another (`_sequential`).

  Every loss is a mean over the batch and every layer works per sample (instance norm), so the
  mean of the micro-batches' gradients is the whole batch's gradient (equal up to float
  summation order; tested). D's update needs every sample's generated volume and G's gradient
  needs the updated D, so the generator runs forward twice: once per micro-batch for D's pass
  and again, with its backward pass, for G's (about a third more generator FLOPs, like remat).
  In the 'scan' form only one micro-batch's activations are alive at a time."""
  k = cfg.accum_steps
  micro = split_micro(x, k)
  mean = lambda tree: jax.tree.map(lambda a: a / k, tree)
  add = lambda a, b: jax.tree.map(jnp.add, a, b)

  def d_micro(acc, xj):
    fake = _generator(cfg, xj)(state.g_params)
    (total, aux), grads = jax.value_and_grad(
        lambda p: _d_loss(cfg, p, xj, fake), has_aux=True)(state.d_params)
    return add(acc, grads), (total, aux)

  zeros_d = jax.tree.map(jnp.zeros_like, state.d_params)
  d_grads, d_losses = _sequential(d_micro, zeros_d, micro, k, cfg.accum_form)
  d_grads = mean(d_grads)
  d_params, d_opt = _update(cfg.d_tx, d_grads, state.d_opt, state.d_params, opt_args)

  def g_micro(acc, xj):
    fake, g_vjp = jax.vjp(_generator(cfg, xj), state.g_params)
    (total, aux), dfake = jax.value_and_grad(
        lambda f: _g_loss(cfg, d_params, xj, f), has_aux=True)(fake)
    (grads,) = g_vjp(dfake)
    return add(acc, grads), (total, aux)

  zeros_g = jax.tree.map(jnp.zeros_like, state.g_params)
  g_grads, g_losses = _sequential(g_micro, zeros_g, micro, k, cfg.accum_form)
  mean_losses = lambda tree: jax.tree.map(lambda a: jnp.mean(a, axis=0), tree)
  return (d_params, d_opt, d_grads, mean_losses(d_losses), mean(g_grads),
          mean_losses(g_losses))


def train_step(cfg: StepConfig, state: TrainState, batch, schedule=None
               ) -> tuple[TrainState, dict]:
  """One D update then one G update on the same generated volumes; returns (state, metrics).
  `schedule`: the learning-rate decay's (start, length) as arrays (`decay_schedule`), so that the
  compiled step does not depend on the run's length; None: the optimisers' own.

  The views (and their noise, geometry draws) are rendered for the whole batch first, so a
  micro-batched step (`cfg.accum_steps` > 1) sees exactly the same inputs as the one-pass step."""
  opt_args = {} if schedule is None else {"schedule": schedule}
  key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
  volume = batch["volume"]
  x = {"volume": volume}
  if "frontal" in batch:  # the user's own paired images
    x["frontal"], x["lateral"] = batch["frontal"], batch["lateral"]
  else:
    geometry = None
    if cfg.random_geometry:
      geometry = x["geometry"] = sample_geometry(cfg, jax.random.fold_in(key, 30),
                                                 volume.shape[0])
    x["frontal"], x["lateral"] = render_views(cfg, volume, key, geometry)

  fn = _grads_and_losses if cfg.accum_steps == 1 else _grads_and_losses_accumulated
  d_params, d_opt, d_grads, (d_total, (d_real, d_fake)), g_grads, (
      g_total, (g_adv, g_recon, g_proj, g_window, g_bone)) = fn(cfg, state, x, opt_args)
  g_params, g_opt = _update(cfg.g_tx, g_grads, state.g_opt, state.g_params, opt_args)
  # EMA with warm-up (decay grows towards ema_decay), so short runs are not dominated by the init.
  decay = jnp.minimum(cfg.ema_decay, (1.0 + state.step) / (10.0 + state.step))
  ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, state.ema_params, g_params)

  g_gnorm, d_gnorm = _norm(g_grads), _norm(d_grads)
  finite = jnp.isfinite(g_total) & jnp.isfinite(d_total) & jnp.isfinite(g_gnorm) & \
      jnp.isfinite(d_gnorm)
  bad_step = jnp.where((state.bad_step < 0) & ~finite, state.step, state.bad_step)
  new = state.replace(step=state.step + 1, g_params=g_params, d_params=d_params, g_opt=g_opt,
                      d_opt=d_opt, ema_params=ema, bad_step=bad_step)
  metrics = {"g/total": g_total, "g/adv": g_adv, "g/recon": g_recon, "g/proj": g_proj,
             "g/window": g_window, "g/bone": g_bone,
             "d/total": d_total, "d/real": d_real, "d/fake": d_fake,
             "g/grad_norm": g_gnorm, "d/grad_norm": d_gnorm,
             "g/param_norm": _norm(g_params), "d/param_norm": _norm(d_params)}
  return new, metrics


def predict(cfg: StepConfig, params, volume: jax.Array, frontal=None, lateral=None,
            geometry=None):
  """Reconstructs `volume` from its given views, or from its (deterministic) DRRs rendered at the
  fixed geometry or at the per-sample `geometry` (B, 2)."""
  if frontal is None:
    frontal, lateral = render_views(cfg, volume, geometry=geometry)
  return g_apply(cfg, params, frontal, lateral, geometry)[0]


def decay_schedule(total_steps: int, decay_start: float) -> tuple[int, int]:
  """(first decaying step, decay length) of `make_optimizer`'s schedule: the train step's
  `schedule` argument."""
  start = int(total_steps * decay_start)
  return start, max(total_steps - start, 0)


def make_optimizer(learning_rate: float, b1: float, b2: float, total_steps: int,
                   decay_start: float) -> optax.GradientTransformation:
  """Adam with a constant rate, decaying linearly to 0 over the last (1 - decay_start) of training.

  The decay's steps are an argument of the update (`schedule=(start, length)`, int32 arrays), so
  the compiled train step does not depend on the run's length: a run continued with more steps,
  or runs of different lengths, reuse one executable. Without it the update uses `total_steps`.
  The rates equal optax's join of a constant and a linear schedule bit for bit, and the state is
  the same (Adam's, then the schedule's count), so earlier checkpoints restore."""
  start, length = decay_schedule(total_steps, decay_start)
  if length == 0:
    return optax.adam(learning_rate, b1=b1, b2=b2)

  def init(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update(updates, state, params=None, *, schedule=None):
    del params
    begin, steps = (start, length) if schedule is None else schedule
    count = state.count
    linear = learning_rate * (1 - jnp.clip(count - begin, 0, steps) / steps)
    rate = jnp.where(count < begin, learning_rate, linear)
    updates = jax.tree.map(lambda g: jnp.array(-rate, dtype=g.dtype) * g, updates)
    return updates, optax.ScaleByScheduleState(count=optax.safe_increment(count))

  return optax.chain(optax.scale_by_adam(b1=b1, b2=b2),
                     optax.GradientTransformationExtraArgs(init, update))
