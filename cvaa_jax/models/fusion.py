"""Per-level fusion of the two views' 3D features `s1`, `s2` with the decoder's features `d`.

All variants return (fused, aux): `fused` goes to the level's conv block as the list of the parts of
its channel concatenation (layers.Conv3D convolves them without concatenating where that saves
memory), `aux` holds attention maps for notebooks. PAPER.md gives the formulas; the variants are the paper's ablation axis:
  add    concat(s1 + s2, d)                         (X2CT-GAN-style additive fusion)
  concat concat(s1, s2, d)
  vaa    View Attention Alignment only: concat(coarse, s1 + s2, d)
  cvaa   VAA + Fine Distillation (the paper): concat(coarse, fine, s1 + s2, d)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from cvaa_jax.models.layers import Conv3D

FUSIONS = ("add", "concat", "vaa", "cvaa")


def fused_channels(fusion: str, ch: int, d_ch: int) -> int:
  return {"add": ch + d_ch, "concat": 2 * ch + d_ch, "vaa": 2 * ch + d_ch,
          "cvaa": 3 * ch + d_ch}[fusion]


class AddFusion(nnx.Module):
  def __call__(self, s1, s2, d):
    return [s1 + s2, d], {}


class ConcatFusion(nnx.Module):
  def __call__(self, s1, s2, d):
    return [s1, s2, d], {}


class CVAA(nnx.Module):
  """View Attention Alignment, optionally followed by Fine Distillation (`fine=True`, the paper).

  VAA: a_v = ReLU(Conv3D(concat(d, s_v))); w = softmax over 2 channels of Conv3D_k(concat(a1, a2));
  coarse = w0 * s1 + w1 * s2. FD: g = sigmoid(Conv3D_3(concat(coarse, d))), fine = g * coarse.
  The paper does not give the a_v conv's kernel or width: 3^3 and `attn_ch` (default: ch // 2).
  """

  def __init__(self, ch: int, d_ch: int, fine: bool = True, attn_ch: int | None = None,
               attn_kernel: int = 7, *, rngs: nnx.Rngs):
    attn_ch = attn_ch or max(1, ch // 2)
    self.align1 = Conv3D(d_ch + ch, attn_ch, 3, rngs=rngs)
    self.align2 = Conv3D(d_ch + ch, attn_ch, 3, rngs=rngs)
    self.logits = Conv3D(2 * attn_ch, 2, attn_kernel, rngs=rngs)
    self.gate = Conv3D(ch + d_ch, 1, 3, rngs=rngs) if fine else None

  def __call__(self, s1, s2, d):
    a1 = jax.nn.relu(self.align1([d, s1]))
    a2 = jax.nn.relu(self.align2([d, s2]))
    w = jax.nn.softmax(self.logits([a1, a2]).astype(jnp.float32), axis=-1)
    w = w.astype(s1.dtype)
    coarse = w[..., :1] * s1 + w[..., 1:] * s2
    aux = {"vaa": w}
    parts = [coarse]
    if self.gate is not None:
      g = jax.nn.sigmoid(self.gate([coarse, d]).astype(jnp.float32))
      g = g.astype(s1.dtype)
      parts.append(g * coarse)
      aux["fd"] = g
    return parts + [s1 + s2, d], aux


def make_fusion(fusion: str, ch: int, d_ch: int, attn_kernel: int = 7, *, rngs: nnx.Rngs):
  if fusion == "add":
    return AddFusion()
  if fusion == "concat":
    return ConcatFusion()
  if fusion in ("vaa", "cvaa"):
    return CVAA(ch, d_ch, fine=(fusion == "cvaa"), attn_kernel=attn_kernel, rngs=rngs)
  raise ValueError(f"unknown fusion {fusion!r}; use one of {FUSIONS}")
