"""A 2-D convolution whose kernel may differ per `vmap` lane, without XLA's grouped convolutions.

Layers with noisy or gated kernels (PNI, IBP) draw a new kernel per forward pass. When an EOT
gradient maps the model over S draws with `vmap`, both the activations and the kernel carry the
draw axis, and JAX batches such a convolution as one grouped convolution
(`feature_group_count = S`), which XLA's CPU backend runs several times slower than S plain ones
(docs/performance.md, item 9). `lane_conv` keeps the plain convolution whenever the kernel is
shared by the lanes (no vmap, or only the activations batched: the lanes become more examples),
and computes the per-lane-kernel case as im2col patches times the kernel, a batched matrix
product, forward and backward alike (on the CPU; GPU and TPU keep the grouped convolution).

Its derivative is a custom VJP, so reverse mode works everywhere; forward mode (`jax.jvp`) through
a layer that uses it is not supported.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap

from jaxrobust import backend
from jaxrobust.models.conv import conv_vjp, explicit_padding, normalize_geometry, plain_conv


def _im2col(x, w, strides, padding):
  """The same convolution as patches (N, H', W', kh·kw·C_in) @ kernel (kh·kw·C_in, C_out)."""
  kh, kw, cin, cout = w.shape
  (top, bottom), (left, right) = explicit_padding(padding, x.shape[1:3], (kh, kw), strides)
  xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  ho = (xp.shape[1] - kh) // strides[0] + 1
  wo = (xp.shape[2] - kw) // strides[1] + 1
  # Tap-major, channel-minor: the order of an HWIO kernel reshaped to (kh·kw·C_in, C_out).
  taps = [
    xp[:, i : i + (ho - 1) * strides[0] + 1 : strides[0], j : j + (wo - 1) * strides[1] + 1 : strides[1], :]
    for i in range(kh)
    for j in range(kw)
  ]
  patches = jnp.concatenate(taps, axis=-1)
  return jnp.einsum('nhwk,ko->nhwo', patches, w.reshape(kh * kw * cin, cout))


def _grouped_is_slow() -> bool:
  """XLA's CPU backend runs grouped convolutions slowly; GPU and TPU run them well, so there the
  per-lane kernels stay one grouped convolution (JAX's own batching of the plain one)."""
  return backend.cpu_paths()


def _broadcast_lanes(args, batched, lanes):
  return [a if b else jnp.broadcast_to(a, (lanes,) + a.shape) for a, b in zip(args, batched)]


def _merge_lanes(a):
  return a.reshape((-1,) + a.shape[2:])


def _split_lanes(a, lanes):
  return a.reshape((lanes, -1) + a.shape[1:])


@functools.cache
def _lane_conv_fn(strides: tuple, padding):
  plain = functools.partial(plain_conv, strides=strides, padding=padding)
  im2col = functools.partial(_im2col, strides=strides, padding=padding)

  forward = custom_vmap(plain)

  @forward.def_vmap
  def _forward_rule(lanes, batched, x, w):
    if not batched[1]:  # one kernel for every lane: the lanes are more examples
      return _split_lanes(forward(_merge_lanes(x), w), lanes), True
    x, w = _broadcast_lanes((x, w), batched, lanes)
    return jax.vmap(im2col if _grouped_is_slow() else plain)(x, w), True

  def plain_vjp(x, w, g):
    return conv_vjp(x, w, g, strides, padding)

  def im2col_vjp(x, w, g):
    return jax.vjp(im2col, x, w)[1](g)

  backward = custom_vmap(plain_vjp)

  @backward.def_vmap
  def _backward_rule(lanes, batched, x, w, g):
    if not batched[1]:
      # Shared kernel: the input gradient as one plain transposed convolution over all lanes;
      # each lane's kernel gradient as patches^T @ g (unused by attacks, so removed by XLA).
      x, g = _broadcast_lanes((x, g), (batched[0], batched[2]), lanes)
      gx = _split_lanes(conv_vjp(_merge_lanes(x), w, _merge_lanes(g), strides, padding)[0], lanes)
      gw = jax.vmap(lambda x, g: jax.vjp(lambda w: im2col(x, w), w)[1](g)[0])(x, g)
      return (gx, gw), (True, True)
    per_lane = im2col_vjp if _grouped_is_slow() else plain_vjp
    return jax.vmap(per_lane)(*_broadcast_lanes((x, w, g), batched, lanes)), (True, True)

  @jax.custom_vjp
  def conv(x, w):
    return forward(x, w)

  conv.defvjp(lambda x, w: (forward(x, w), (x, w)), lambda res, g: tuple(backward(*res, g)))
  return conv


def lane_conv(x, w, strides=(1, 1), padding='SAME'):
  """`lax.conv_general_dilated(x, w, strides, padding)` in NHWC/HWIO, fast under `vmap` when
  the kernel `w` carries the mapped axis (a kernel drawn per lane). Arguments as
  `models.conv.conv`; the result equals the plain convolution up to float rounding.
  """
  return _lane_conv_fn(*normalize_geometry(strides, padding))(x, w)
