"""2D/3D registration of an atlas CT to a radiograph pair through the differentiable DRR renderer.

The atlas (fit/atlas.py) is warped onto the model grid (fit/warp.py), rendered in the pair's own
canonical geometry (models/projection.py: the views the network takes, signed inverse source
distances kappa), and the warp is optimised with Adam so that the two DRRs match the two radiographs
under `similarity.combined` (affine-invariant, edge-weighted: bone drives it, not soft tissue).

Stages (each one jit-compiled `lax.scan` over optax steps):
  1. coarse: a similarity transform (translation, rotation, per-axis scale) on a half-resolution grid,
     from several starts along the body axis and front to back (the vertebral level is not decided by
     a local optimiser), all starts at once (vmap);
  2. fine: the best start's similarity at full resolution;
  3. deform: a coarse control-grid displacement on top, with a smoothness penalty.
What is compared: only pixels whose rays cross the whole model box (cone views cast a dark frame,
shared by fit and target, that would otherwise count as agreement) and whose rays lie inside the
atlas's scan range along z (air filling a short atlas must not be matched to anatomy). The share of
the field the atlas covers enters the loss and the final score, so a short atlas cannot win by
covering a little of it well.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cvaa_jax import drr
from cvaa_jax.fit import similarity, warp
from cvaa_jax.fit.atlas import Atlas
from cvaa_jax.models import projection

VIEW_NAMES = ("ap", "lateral")
PAD_MULTIPLE = 32  # atlases are padded with air to a common shape: one compiled program per set


@dataclasses.dataclass(frozen=True)
class FitConfig:
  """Registration settings (defaults measured in benchmarks/atlas_fit.py)."""

  coarse_size: int = 32
  starts_z_mm: tuple = (-60.0, -30.0, 0.0, 30.0, 60.0)
  starts_y_mm: tuple = (0.0,)
  coarse_steps: int = 60
  fine_steps: int = 30
  deform_steps: int = 100
  grid: int = 6
  lr_t: float = 3.0  # mm per step (Adam)
  lr_rot: float = 0.03
  lr_scale: float = 0.03
  lr_disp: float = 0.05
  smooth: float = 0.05  # weight of the control grid's squared neighbour differences (tanh units)
  coverage_weight: float = 0.5  # score lost per unit of the field the atlas leaves uncovered
  scale_prior: float = 0.05  # penalty on log-scale (per bound^2): patients differ, not by 25 %
  sim_weights: tuple = (0.2, 0.4, 0.4)  # ncc, gradient, highpass
  sigma_mm: float = 12.0  # high-pass blur on the isocentre plane
  limits: warp.Limits = warp.Limits()


@dataclasses.dataclass(frozen=True)
class Target:
  """A radiograph pair on the model's canonical views."""

  views: np.ndarray  # (2, S, S) frontal, lateral in [0, 1] (line-integral domain, dense = bright)
  geometry: tuple[float, float]  # signed inverse source distances (frontal, lateral), 1/mm
  fov_mm: float

  @property
  def size(self) -> int:
    return int(self.views.shape[-1])


@dataclasses.dataclass
class Fit:
  """One atlas fitted to one pair."""

  name: str
  hu: np.ndarray  # (S, S, S) warped atlas, HU, model grid (air where it does not reach)
  coverage: np.ndarray  # (S, S, S) 1 where the atlas's scan range reaches
  score: float  # final similarity minus the coverage penalty: what atlases are ranked by
  similarity: dict  # per view: final combined similarity, and its ncc / gradient / highpass parts
  covered_share: float  # share of the compared pixels inside the atlas's range
  params: dict
  seconds: float


def pad_shape(atlases) -> tuple[int, int, int]:
  """The common padded shape of a set of atlases (each axis rounded up to PAD_MULTIPLE)."""
  top = np.max([a.hu.shape for a in atlases], axis=0)
  return tuple(int(-(-n // PAD_MULTIPLE) * PAD_MULTIPLE) for n in top)


def padded(atlas: Atlas, shape_to=None) -> tuple[np.ndarray, np.ndarray, float, float]:
  """The atlas as attenuation (mu/mm) padded with air to `shape_to` (default: `pad_shape`), its
  padded origin, and its z range (mm, atlas frame) before padding."""
  shape = np.asarray(atlas.hu.shape)
  shape_to = tuple(shape_to or pad_shape([atlas]))
  if np.any(shape > shape_to):
    raise ValueError(f"atlas {atlas.name}: shape {tuple(shape)} exceeds the padded {shape_to}.")
  lo = (np.asarray(shape_to) - shape) // 2
  mu = np.zeros(shape_to, np.float32)
  mu[tuple(slice(a, a + n) for a, n in zip(lo, shape))] = np.asarray(
      drr.hu_to_mu(np.asarray(atlas.hu, np.float32)))
  origin = atlas.origin - lo * atlas.spacing_mm
  z0 = atlas.origin[2] - 0.5 * atlas.spacing_mm
  return mu, origin.astype(np.float32), float(z0), float(z0 + shape[2] * atlas.spacing_mm)


def geometries(size: int, fov_mm: float, kappa: tuple[float, float]):
  return tuple(projection.canonical_geometry(v, size, fov_mm, float(k))
               for v, k in zip(VIEW_NAMES, kappa))


def render(mu: jax.Array, geoms, fov_mm: float) -> jax.Array:
  """(2, S, S) line integrals of a model-grid attenuation volume in the two canonical views."""
  spacing, origin = projection.grid(mu.shape[0], fov_mm)
  return jnp.stack([drr.project(mu, spacing, origin, g) for g in geoms])


@functools.lru_cache(maxsize=32)
def frame_mask(size: int, fov_mm: float, kappa: tuple[float, float]) -> np.ndarray:
  """(2, S, S) 1 where the ray crosses the whole model box (path within 2 % of the longest)."""
  with jax.ensure_compile_time_eval():
    ones = jnp.ones((size,) * 3, jnp.float32)
    path = np.asarray(render(ones, geometries(size, fov_mm, kappa), fov_mm))
  return (path >= 0.98 * path.max(axis=(1, 2), keepdims=True)).astype(np.float32)


def coarse_size(size: int, wanted: int) -> int:
  """The coarse stage's grid: `size` divided by the largest whole factor that keeps it >= wanted
  (the grid itself when it is no larger than `wanted`)."""
  factors = [f for f in range(1, size + 1) if size % f == 0 and size // f >= min(wanted, size)]
  return size // max(factors)


def downsample(views: np.ndarray, size: int) -> np.ndarray:
  f = views.shape[-1] // size
  return views.reshape(views.shape[:-2] + (size, f, size, f)).mean((-3, -1))


def _smooth_cov(points, z0, z1, width):
  z = points[..., 2]
  return jax.nn.sigmoid((z - z0) / width) * jax.nn.sigmoid((z1 - z) / width)


def _objective(params, mu, origin, spacing, z0, z1, target, mask, kappa, fov_mm, size,
               cfg: FitConfig, deform: bool):
  """Loss and diagnostics of one start."""
  geoms = geometries(size, fov_mm, kappa)
  q = warp.atlas_points(params, size, fov_mm, cfg.limits, deform=deform)
  vol = warp.sample(mu, origin, spacing, q)
  cov = _smooth_cov(q, z0, z1, spacing * 0.5)
  img = render(vol, geoms, fov_mm)
  ones_path = render(jnp.ones_like(cov), geoms, fov_mm)
  cov_ratio = render(cov, geoms, fov_mm) / jnp.maximum(ones_path, 1e-6)
  w = mask * jax.lax.stop_gradient((cov_ratio > 0.995).astype(jnp.float32))
  sigma_px = cfg.sigma_mm / (fov_mm / size)
  wn, wg, wh = cfg.sim_weights
  parts = {"ncc": similarity.ncc(target, img, w), "gradient": similarity.gradient(target, img, w),
           "highpass": similarity.highpass(target, img, w, sigma_px)}
  sim = (wn * parts["ncc"] + wg * parts["gradient"] + wh * parts["highpass"]) / (wn + wg + wh)
  # The covered share enters the score, not the gradient: with a gradient, stretching the atlas
  # along z to cover the field paid (measured: scales pinned at the 1.25 bound).
  share = jax.lax.stop_gradient((mask * cov_ratio).sum((1, 2)) / mask.sum((1, 2)))
  log_s = jnp.tanh(params["log_s"]) * np.log(cfg.limits.max_scale)
  loss = (-sim.mean() + cfg.coverage_weight * (1.0 - share.mean())
          + cfg.scale_prior * jnp.mean((log_s / np.log(cfg.limits.max_scale)) ** 2))
  if deform:
    d = jnp.tanh(params["disp"])
    rough = sum(jnp.mean(jnp.diff(d, axis=a) ** 2) for a in range(3))
    loss = loss + cfg.smooth * rough
  return loss, {"sim": sim, "share": share, **parts}


def _optimizer(cfg: FitConfig, deform: bool) -> optax.GradientTransformation:
  lrs = {"t": cfg.lr_t, "rot": cfg.lr_rot, "log_s": cfg.lr_scale,
         "disp": cfg.lr_disp if deform else 0.0}
  return optax.multi_transform({k: optax.adam(v) if v > 0 else optax.set_to_zero()
                                for k, v in lrs.items()}, {k: k for k in lrs})


@functools.partial(jax.jit, static_argnames=("kappa", "fov_mm", "size", "cfg", "deform", "steps"))
def _run(params, mu, origin, spacing, z0, z1, target, mask, *, kappa, fov_mm, size,
         cfg: FitConfig, deform: bool, steps: int):
  """`steps` Adam steps on a batch of starts (leading axis of `params`); returns the final
  parameters and the diagnostics at them."""
  tx = _optimizer(cfg, deform)
  obj = functools.partial(_objective, mu=mu, origin=origin, spacing=spacing, z0=z0, z1=z1,
                          target=target, mask=mask, kappa=kappa, fov_mm=fov_mm, size=size, cfg=cfg,
                          deform=deform)
  total = lambda p: jnp.sum(jax.vmap(lambda pi: obj(pi)[0])(p))  # starts are independent

  def body(carry, _):
    p, s = carry
    g = jax.grad(total)(p)
    u, s = tx.update(g, s, p)
    return (optax.apply_updates(p, u), s), None

  (params, _), _ = jax.lax.scan(body, (params, tx.init(params)), None, length=steps)
  losses, aux = jax.vmap(obj)(params)
  return params, losses, aux


def fit_atlas(atlas: Atlas, target: Target, cfg: FitConfig = FitConfig(),
              shape_to: tuple[int, int, int] | None = None) -> Fit:
  """Registers one atlas to one pair (stages in the module docstring). Atlases fitted with the same
  `shape_to` (see `pad_shape`) share one compiled program."""
  t0 = time.perf_counter()
  mu, origin, z0, z1 = padded(atlas, shape_to)
  mu_j, origin_j = jnp.asarray(mu), jnp.asarray(origin)
  sp = jnp.float32(atlas.spacing_mm)
  kappa = tuple(float(k) for k in target.geometry)
  size, fov = target.size, float(target.fov_mm)
  common = dict(fov_mm=fov, cfg=cfg)
  # 1. coarse, several starts (a whole fraction of the grid, at most coarse_size)
  cs = coarse_size(size, cfg.coarse_size)
  starts = np.array([[0.0, y, z] for z in cfg.starts_z_mm for y in cfg.starts_y_mm], np.float32)
  params = warp.init_params(len(starts), cfg.grid, starts)
  params, losses, _ = _run(params, mu_j, origin_j, sp, z0, z1,
                           jnp.asarray(downsample(target.views, cs)),
                           jnp.asarray(frame_mask(cs, fov, kappa)),
                           kappa=kappa, size=cs, deform=False,
                           steps=cfg.coarse_steps, **common)
  best = int(jnp.argmin(losses))
  params = jax.tree.map(lambda a: a[best:best + 1], params)
  # 2. fine similarity, 3. deformation, at full resolution
  full = dict(kappa=kappa, size=size, **common)
  tgt, mask = jnp.asarray(target.views), jnp.asarray(frame_mask(size, fov, kappa))
  params, losses, aux = _run(params, mu_j, origin_j, sp, z0, z1, tgt, mask, deform=False,
                             steps=cfg.fine_steps, **full)
  if cfg.deform_steps > 0:
    params, losses, aux = _run(params, mu_j, origin_j, sp, z0, z1, tgt, mask, deform=True,
                               steps=cfg.deform_steps, **full)
  params = jax.tree.map(lambda a: a[0], params)
  hu, cov = warped(atlas, params, size, fov, cfg, deform=cfg.deform_steps > 0)
  sim = np.asarray(aux["sim"][0])
  share = float(np.asarray(aux["share"][0]).mean())
  per_view = {v: {"combined": float(sim[i]), **{k: float(np.asarray(aux[k][0])[i])
                                                  for k in ("ncc", "gradient", "highpass")}}
              for i, v in enumerate(("frontal", "lateral"))}
  score = float(sim.mean()) - cfg.coverage_weight * (1.0 - share)
  return Fit(atlas.name, hu, cov, score, per_view, share, jax.device_get(params),
             time.perf_counter() - t0)


def warped(atlas: Atlas, params: dict, size: int, fov_mm: float, cfg: FitConfig = FitConfig(),
           deform: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """The atlas in HU on the model grid under `params` (air outside it), and its z coverage."""
  q = warp.atlas_points(params, size, fov_mm, cfg.limits, deform=deform)
  hu = warp.sample(jnp.asarray(atlas.hu, jnp.float32), jnp.asarray(atlas.origin, jnp.float32),
                   atlas.spacing_mm, q, fill=-1000.0)
  cov = warp.covered(atlas.hu.shape[2], float(atlas.origin[2]), atlas.spacing_mm, q)
  return np.asarray(hu), np.asarray(cov)
