"""2-D convolutions whose input gradient XLA's CPU backend runs at full speed inside loops.

JAX differentiates a convolution with respect to its input as a convolution of the output
gradient with the kernel reversed in space and its two channel axes swapped; XLA folds the swap
into the convolution's dimension labels (a kernel read as H, W, O, I). At the top level of a
compiled program the CPU backend copies that kernel into its usual layout and calls its library
convolution. Inside a `while` loop, which is where an attack's iterations run, it does not: the
convolution is emitted as a naive loop nest, and a PGD step of the small CNN takes much longer
(docs/performance.md, item 10). `conv` computes the same input gradient with the reversed,
swapped kernel materialised behind an optimization barrier, so it stays an ordinary NHWC/HWIO
convolution wherever it runs; its values equal JAX's own derivative.

`Conv` is `nn.Conv` with this convolution; every convolution of jaxrobust's models uses it (the
per-lane kernels of `lane_conv` use `input_gradient`). On GPU and TPU both are the plain
convolution with JAX's derivative. The derivative is a custom JVP whose tangent map in x is the
transpose of `input_gradient`, so reverse mode (which transposes it) runs `input_gradient`, and
forward mode (`jax.jvp`, `jax.jacfwd`, Hessian-vector products) works too.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero
from jaxrobust import backend

DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')


def plain_conv(x, w, strides, padding):
  """`lax.conv_general_dilated` in NHWC/HWIO, differentiated by JAX."""
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=DIMENSION_NUMBERS)


def explicit_padding(padding, spatial, window, strides) -> tuple[tuple[int, int], ...]:
  """((top, bottom), (left, right)) from 'SAME', 'VALID' or explicit pairs."""
  if isinstance(padding, str):
    return tuple((int(lo), int(hi)) for lo, hi in lax.padtype_to_pads(spatial, window, strides, padding))
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def input_gradient(g, w, x_shape, strides, padding):
  """∂⟨g, conv(x, w)⟩/∂x: the transposed convolution of `g` with a materialised kernel.

  Args:
    g: (N, H', W', C_out) gradient of the convolution's output.
    w: (kh, kw, C_in, C_out) kernel.
    x_shape: the input's shape (N, H, W, C_in).
    strides, padding: the forward convolution's.

  Returns:
    (N, H, W, C_in), the input gradient.
  """
  window = w.shape[:2]
  pads = explicit_padding(padding, x_shape[1:3], window, strides)
  before = [k - 1 - lo for k, (lo, _) in zip(window, pads)]
  # The strided output, dilated back onto the input grid, must cover the input exactly.
  after = [
    n + k - 1 - ((o - 1) * s + 1) - b
    for n, k, o, s, b in zip(x_shape[1:3], window, g.shape[1:3], strides, before)
  ]
  # The barrier keeps XLA from folding the swap back into the dimension labels.
  kernel = lax.optimization_barrier(jnp.flip(w, (0, 1)).swapaxes(2, 3))
  return lax.conv_general_dilated(
    g,
    kernel,
    (1, 1),
    tuple(zip(before, after)),
    lhs_dilation=tuple(strides),
    dimension_numbers=DIMENSION_NUMBERS,
  )


def conv_vjp(x, w, g, strides, padding):
  """(∂/∂x, ∂/∂w) of ⟨g, conv(x, w)⟩: the input gradient by `input_gradient` on the CPU, the
  kernel gradient as JAX computes it."""
  gw = jax.vjp(lambda w: plain_conv(x, w, strides, padding), w)[1](g)[0]
  if not backend.cpu_paths():
    return jax.vjp(lambda x: plain_conv(x, w, strides, padding), x)[1](g)[0], gw
  return input_gradient(g, w, x.shape, strides, padding), gw


@functools.cache
def _conv_fn(strides: tuple, padding):
  """The convolution with a custom JVP whose tangent in x is the transpose of `input_gradient`:
  forward mode computes that transpose (a plain convolution), and reverse mode, which transposes
  the tangent map, gets `input_gradient` itself back. Every transformation goes through it."""

  @jax.custom_jvp
  def conv(x, w):
    return plain_conv(x, w, strides, padding)

  def rule(primals, tangents):
    x, w = primals
    dx, dw = tangents
    y = plain_conv(x, w, strides, padding)
    out = []
    if not isinstance(dx, SymbolicZero):  # symbolic zeros: no convolution of zeros in training
      tangent_in_x = jax.linear_transpose(
        lambda g: input_gradient(g, w, x.shape, strides, padding), jax.ShapeDtypeStruct(y.shape, y.dtype)
      )
      out.append(tangent_in_x(dx)[0])
    if not isinstance(dw, SymbolicZero):
      out.append(plain_conv(x, dw, strides, padding))
    return y, (sum(out[1:], out[0]) if out else jnp.zeros_like(y))

  conv.defjvp(rule, symbolic_zeros=True)
  return conv


def normalize_geometry(strides, padding) -> tuple[tuple, object]:
  """Hashable (strides, padding): an int stride becomes a pair, padding pairs become tuples."""
  strides = (strides,) * 2 if isinstance(strides, int) else tuple(int(s) for s in strides)
  if not isinstance(padding, str):
    padding = tuple((int(lo), int(hi)) for lo, hi in padding)
  return strides, padding


def conv(x, w, strides=(1, 1), padding='SAME'):
  """`lax.conv_general_dilated(x, w, strides, padding)` in NHWC/HWIO whose input gradient runs
  as a library convolution on the CPU, also inside loops (see the module docstring).

  Args:
    x: (N, H, W, C_in) inputs.
    w: (kh, kw, C_in, C_out) kernel.
    strides: an int or a pair.
    padding: 'SAME', 'VALID' or ((top, bottom), (left, right)).

  Returns:
    (N, H', W', C_out), the plain convolution's values.
  """
  strides, padding = normalize_geometry(strides, padding)
  if not backend.cpu_paths():
    return plain_conv(x, w, strides, padding)
  return _conv_fn(strides, padding)(x, w)


def _is_nhwc(dimension_numbers, lhs, rhs) -> bool:
  if dimension_numbers is None:
    return False
  want = lax.conv_dimension_numbers(lhs.shape, rhs.shape, DIMENSION_NUMBERS)
  return lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == want


def conv_general_dilated(
  lhs,
  rhs,
  window_strides,
  padding,
  lhs_dilation=None,
  rhs_dilation=None,
  dimension_numbers=None,
  feature_group_count=1,
  batch_group_count=1,
  precision=None,
  preferred_element_type=None,
):
  """`lax.conv_general_dilated`'s signature, as `nn.Conv` calls it: `conv` for an undilated,
  ungrouped NHWC/HWIO 2-D convolution, the lax function for anything else."""
  undilated = all(d == 1 for d in (lhs_dilation or ())) and all(d == 1 for d in (rhs_dilation or ()))
  if (
    lhs.ndim == 4
    and undilated
    and feature_group_count == 1
    and batch_group_count == 1
    and precision is None
    and preferred_element_type is None
    and _is_nhwc(dimension_numbers, lhs, rhs)
  ):
    return conv(lhs, rhs, window_strides, padding)
  return lax.conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=lhs_dilation,
    rhs_dilation=rhs_dilation,
    dimension_numbers=dimension_numbers,
    feature_group_count=feature_group_count,
    batch_group_count=batch_group_count,
    precision=precision,
    preferred_element_type=preferred_element_type,
  )


# nn.Conv with `conv`: the same parameters (names, shapes, initialisers), the fast input gradient.
Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)
