"""Models by name, fast construction, and a parameter summary."""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import jax
import numpy as np
from flax import nnx

from cvaa_jax.models.baselines import CNN3DGenerator, PSRLightGenerator, X2CTLightGenerator
from cvaa_jax.models.discriminator import PatchDiscriminator3D
from cvaa_jax.models.generator import CVAAGenerator, GeneratorConfig
from cvaa_jax.models.psr import PSRGenerator
from cvaa_jax.models.x2ct import X2CTGenerator

GENERATORS = {"cvaa_gan": CVAAGenerator, "x2ct_gan": X2CTGenerator,
              "x2ct_gan_light": X2CTLightGenerator, "3dcnn": CNN3DGenerator, "psr": PSRGenerator,
              "psr_light": PSRLightGenerator}


def make_config(**model_cfg: Any) -> GeneratorConfig:
  return GeneratorConfig(**{k: v for k, v in model_cfg.items()
                            if k not in ("name", "disc_channels", "disc_layers")})


def generator_ctor(name: str, cfg: GeneratorConfig) -> Callable[[nnx.Rngs], nnx.Module]:
  if name not in GENERATORS:
    raise ValueError(f"unknown model {name!r}; use one of {sorted(GENERATORS)}")
  return lambda rngs: GENERATORS[name](cfg, rngs=rngs)


def discriminator_ctor(cfg: GeneratorConfig, base_channels: int = 32, n_layers: int = 3
                       ) -> Callable[[nnx.Rngs], nnx.Module]:
  return lambda rngs: PatchDiscriminator3D(cfg, base_channels, n_layers, rngs=rngs)


@contextlib.contextmanager
def _straight_line_threefry():
  """While lowering inside this block, XLA:CPU gets JAX's straight-line threefry instead of its
  CPU default, a 5-step loop per random draw. The bits are the same (identical uint32
  arithmetic; tested), but a model's initialiser then has no loops: 53 loops and ~600 copy
  operations fewer for the demo generator, whose cached program loads in 0.27 s instead of
  0.52 s (benchmarks/RESULTS.md). Only for programs that run once: the train step loads slower
  with it (1.48 s against 1.14 s). JAX internals: where they differ, nothing is changed."""
  try:
    from jax._src.interpreters import mlir  # pylint: disable=g-import-not-at-top
    from jax._src.random import threefry2x32 as tf  # pylint: disable=g-import-not-at-top
    prim, straight, rolled = (tf.threefry2x32_p, tf._threefry2x32_lowering_rule,  # pylint: disable=protected-access
                              tf._threefry2x32_cpu_lowering_rule)  # pylint: disable=protected-access
  except (ImportError, AttributeError):
    yield False
    return
  mlir.register_lowering(prim, straight, platform="cpu")
  try:
    yield True
  finally:
    mlir.register_lowering(prim, rolled, platform="cpu")


def create(ctor: Callable[[nnx.Rngs], nnx.Module], seed: int = 0) -> nnx.Module:
  """Builds a module with all initialisers in one compiled program.

  Eager NNX construction runs one XLA program per initialiser (~15 s per model on this CPU); one
  jitted program is compiled without backend optimisation, which cut its compile time from 11 s to
  1.6 s here: it runs once, so its speed does not matter. Its random draws are lowered without
  loops (`_straight_line_threefry`), which halves its load from the compilation cache.
  """
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: ctor(nnx.Rngs(seed))))
  with _straight_line_threefry():
    lowered = jax.jit(lambda: nnx.split(ctor(nnx.Rngs(seed)))[1]).lower()
  try:
    compiled = lowered.compile(compiler_options={"xla_backend_optimization_level": 0})
  except Exception:  # pylint: disable=broad-except  # a backend without that option
    compiled = lowered.compile()
  return nnx.merge(graphdef, compiled())


def abstract(ctor: Callable[[nnx.Rngs], nnx.Module]) -> nnx.Module:
  """Shapes only: nothing allocated, nothing compiled (for paper-size models on small machines)."""
  return nnx.eval_shape(lambda: ctor(nnx.Rngs(0)))


def param_table(module: nnx.Module) -> list[tuple[str, int]]:
  """(top-level submodule, parameter count) rows plus a total."""
  state = nnx.state(module, nnx.Param)
  rows: dict[str, int] = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    key = str(getattr(path[0], "key", path[0]))
    rows[key] = rows.get(key, 0) + int(np.prod(leaf.shape))
  out = sorted(rows.items())
  return out + [("total", sum(rows.values()))]


def summary(module: nnx.Module, name: str = "") -> str:
  rows = param_table(module)
  width = max(len(r[0]) for r in rows)
  lines = [f"{name or type(module).__name__}"] + [f"  {k:<{width}}  {v:>12,}" for k, v in rows]
  return "\n".join(lines)
