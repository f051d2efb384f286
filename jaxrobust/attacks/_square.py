"""Square Attack: score-based random search, no gradient (L∞ and L2).

Each query changes one random square window of the current best point: in L∞ the window is set
to ±ε per channel (vertical stripes at the start); in L2 mass is moved between two windows with a
fixed centred pattern. A step is kept when the margin loss falls or the point is misclassified;
each example stops once it is broken. The window's side follows the reference's schedule of
p (the fraction of pixels changed), halving from p_init = 0.8 at fixed query counts.

The search is a `while_loop` of forward passes that ends when every example is broken or the query
budget is spent; on concrete inputs it drops the broken examples after 50, 100, 200, ... queries
and goes on with the others (each example's draws come from its own key, so nothing else changes).
With EOT and `far_draws`, each stage also sorts the points still standing by a sequential test:
a point whose best margin, re-measured on `eot_samples` fresh draws, lies more than four standard
errors of a `far_draws`-draw mean above zero is far from breaking, and its next stage's queries
average only `far_draws` draws; the others keep `eot_samples`. A point that a few draws call broken
is re-measured at the next boundary and searched on if the full draws disagree, so fewer draws
never end a search early. Images are (batch, height, width, channels).
Windows are drawn per example, and at every position of the image: the reference draws one
window for the whole batch and never places it on the last row or column (`reference_windows=True`
draws positions as it does, for parity measurements).

References:
  Andriushchenko, Croce, Flammarion & Hein 2020, "Square Attack: a query-efficient black-box
  adversarial attack via random search", ECCV, arXiv:1912.00049 (fra31/auto-attack `square.py`)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import keys
from jaxrobust.attacks import _attack_keys
from jaxrobust.attacks import _devices
from jaxrobust.attacks import _checks
from jaxrobust.attacks import _geometry
from jaxrobust.attacks import _loop

# The reference's schedule: p_init is divided by these factors after these query counts (out of
# 10,000; with `rescale_schedule` the counts scale with the budget).
_P_STEPS = np.array([10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000])
_P_DIVISORS = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256, 512], np.float32)


def p_schedule(i, num_queries: int, p_init: float, rescale: bool):
  """The fraction p of pixels the i-th query changes."""
  it = (i * 10000) // num_queries if rescale else i
  return p_init / jnp.asarray(_P_DIVISORS)[jnp.searchsorted(jnp.asarray(_P_STEPS), it, side='left')]


def _eta_rectangles(a: int, b: int) -> np.ndarray:
  d = np.zeros((a, b))
  xc, yc = a // 2 + 1, b // 2 + 1
  c0, c1 = xc - 1, yc - 1
  for k in range(max(xc, yc)):
    d[max(c0, 0) : min(c0 + 2 * k + 1, a), max(0, c1) : min(c1 + 2 * k + 1, b)] += 1.0 / (k + 1) ** 2
    c0 -= 1
    c1 -= 1
  return d / np.sqrt((d**2).sum())


def eta_pattern(s: int) -> np.ndarray:
  """The L2 attack's s×s window pattern: concentric rectangles, + on the top half, − below."""
  d = np.zeros((s, s))
  d[: s // 2] = _eta_rectangles(s // 2, s)
  d[s // 2 :] = -_eta_rectangles(s - s // 2, s)
  return d / np.sqrt((d**2).sum())


@functools.lru_cache(maxsize=16)
def _eta_table(h: int, w: int) -> np.ndarray:
  """eta_pattern(s) for every side s, zero-padded into an (h, w) frame: (max side + 1, h, w)."""
  m = min(h, w)
  t = np.zeros((m + 1, h, w), np.float32)
  for s in range(2, m + 1):
    t[s, :s, :s] = eta_pattern(s)
  return t


def _window(vh, vw, s, h, w):
  """(B, h, w, 1) indicator of the s×s windows at rows vh, columns vw (per example)."""
  rows = jnp.arange(h)[None, :, None]
  cols = jnp.arange(w)[None, None, :]
  inside = (rows >= vh[:, None, None]) & (rows < (vh + s)[:, None, None])
  inside &= (cols >= vw[:, None, None]) & (cols < (vw + s)[:, None, None])
  return inside[..., None]


def _shift(frame, vh, vw):
  """Moves a pattern drawn at the top-left corner of an (h, w) frame to (vh, vw), per example."""
  return jax.vmap(lambda f, a, b: jnp.roll(f, (a, b), axis=(0, 1)))(frame, vh, vw)


def _l2_norm(v):
  return jnp.sqrt(jnp.sum(v * v, axis=tuple(range(1, v.ndim)), keepdims=True))


_STATIC = (
  'num_queries',
  'norm',
  'p_init',
  'targeted',
  'rescale',
  'eot_samples',
  'microbatch',
  'reference_windows',
)


def _search(
  logits_fn,
  key,
  x,
  y,
  eps,
  lo,
  hi,
  *,
  num_queries,
  norm,
  p_init,
  targeted,
  rescale,
  eot_samples,
  microbatch,
  reference_windows,
):
  """(start, margin, propose, recheck): the initial point, the margin and the i-th query's
  proposal, and the margin's mean and standard deviation over fresh draws at a stage boundary."""
  b, h, w, c = x.shape
  n_features = h * w * c
  eps_b, lo, hi = _geometry.bcast(eps, x), _geometry.bcast(lo, x), _geometry.bcast(hi, x)
  noise_key, model_key = _attack_keys.split_attack_key(key, b)
  num_classes = _checks.num_classes_of(logits_fn, x)

  def draws_margin(xx, yy, k):
    """The margin z_y − max_{j≠y} z_j (its negation when targeted), averaged over EOT draws."""
    onehot = jax.nn.one_hot(yy, num_classes, dtype=bool)

    def one(kd):
      z = logits_fn(xx, kd)
      z_y = jnp.sum(jnp.where(onehot, z, 0.0), -1)
      other = jnp.max(jnp.where(onehot, -jnp.inf, z), -1)
      m = other - z_y if targeted else z_y - other
      return m, _checks.nonfinite(z)

    m, bad = jax.vmap(one)(jax.random.split(k, eot_samples))
    return m, bad.any(0)

  def mean_margin(xx, yy, k):
    m, bad = draws_margin(xx, yy, k)
    return m.mean(0), bad

  def margin(xx, i):
    k = jax.random.fold_in(model_key, i)
    if microbatch and microbatch < b:
      # EOT over many draws multiplies the batch the model sees; in chunks under `lax.map` the
      # activations stay in cache (measured by `benchmarks/adaptive_budget.py`). Each chunk draws
      # its own noise.
      return _loop._map_chunks(mean_margin, xx, y, k, microbatch)
    return mean_margin(xx, y, k)

  def recheck(xx, i0):
    k = jax.random.fold_in(jax.random.fold_in(model_key, keys.TAG_SQUARE_RECHECK), i0)
    m, bad = draws_margin(xx, y, k)
    return m.mean(0), m.std(0), bad

  def draw(i):
    return jax.random.fold_in(noise_key, i) if noise_key.ndim == 0 else _attack_keys.fold_keys(noise_key, i)

  def sample(k, shape, fn):
    return _attack_keys.sample_like(k, jnp.zeros((b,) + shape), fn)

  coin = lambda k, shape: jax.random.bernoulli(k, 0.5, shape)
  signs = lambda k, shape: jnp.where(sample(k, shape, coin), 1.0, -1.0)
  randint = lambda k, hi_: (sample(k, (), jax.random.uniform) * hi_).astype(jnp.int32)

  def start():
    if norm == 'linf':
      return jnp.clip(x + eps_b * signs(draw(num_queries), (1, w, c)), lo, hi)  # vertical stripes
    s0 = max(h // 5, 1)
    offset = (h - 5 * s0) // 2
    eta0 = jnp.asarray(eta_pattern(s0) if s0 > 1 else np.ones((1, 1)), x.dtype)
    delta = jnp.zeros_like(x)
    tile = 0
    for vh in range(offset, offset + s0 * (h // s0), s0):
      for vw in range(offset, offset + s0 * (w // s0), s0):
        if vh + s0 > h or vw + s0 > w:
          continue
        sg = signs(_attack_keys.fold_keys(draw(num_queries), tile), (1, 1, c))
        delta = delta.at[:, vh : vh + s0, vw : vw + s0, :].add(eta0[None, :, :, None] * sg)
        tile += 1
    return jnp.clip(x + delta / (_l2_norm(delta) + 1e-12) * eps_b, lo, hi)

  eta_table = jnp.asarray(_eta_table(h, w), x.dtype)
  # A window of side s starts at 0 .. n − s; the reference's `random_int(0, n − s)` never draws
  # the last of these (so its windows never reach the last row or column once s < n).
  last = 0 if reference_windows else 1

  def propose(i, x_best):
    k = draw(i)
    p = p_schedule(i, num_queries, p_init, rescale)
    side = jnp.round(jnp.sqrt(p * n_features / c)).astype(jnp.int32)
    if norm == 'linf':
      s = jnp.clip(side, 1, min(h, w))
      vh = randint(_attack_keys.fold_keys(k, 0), h - s + last)
      vw = randint(_attack_keys.fold_keys(k, 1), w - s + last)
      win = _window(vh, vw, s, h, w)
      x_new = x_best + win * (2.0 * eps_b * signs(_attack_keys.fold_keys(k, 2), (1, 1, c)))
      return jnp.clip(jnp.clip(x_new, x - eps_b, x + eps_b), lo, hi)
    s = jnp.clip(side, 3, min(h, w))
    s = jnp.where(s % 2 == 0, jnp.minimum(s + 1, min(h, w)), s)
    delta = x_best - x
    vh, vh2 = (randint(_attack_keys.fold_keys(k, j), h - s + last) for j in (0, 2))
    vw, vw2 = (randint(_attack_keys.fold_keys(k, j), w - s + last) for j in (1, 3))
    win1, win2 = _window(vh, vw, s, h, w), _window(vh2, vw2, s, h, w)
    in1 = delta * win1
    norm_win1 = jnp.sqrt(jnp.sum(in1 * in1, axis=(1, 2), keepdims=True))  # per channel
    norm_image = _l2_norm(delta)
    norm_windows = _l2_norm(delta * jnp.maximum(win1, win2))
    pattern = jnp.broadcast_to(eta_table[s], (b, h, w))
    flip = sample(_attack_keys.fold_keys(k, 4), (), coin) > 0
    pattern = jnp.where(flip[:, None, None], jnp.swapaxes(pattern, 1, 2), pattern) if h == w else pattern
    new = _shift(pattern, vh, vw)[..., None] * signs(_attack_keys.fold_keys(k, 5), (1, 1, c))
    new = new + in1 / (1e-12 + norm_win1)
    budget = jnp.sqrt(jnp.maximum(eps_b**2 - norm_image**2, 0.0) / c + norm_windows**2)
    new = new / (jnp.sqrt(jnp.sum(new * new, axis=(1, 2), keepdims=True)) + 1e-12) * budget * win1
    delta = delta * (1 - win2) * (1 - win1) + new
    return jnp.clip(x + delta / (_l2_norm(delta) + 1e-12) * eps_b, lo, hi)

  return start, margin, propose, recheck


@functools.partial(jax.jit, static_argnames=_STATIC)
def _square_start(logits_fn, key, x, y, eps, lo, hi, **static):
  """The first point (vertical stripes in L∞, a grid of patterns in L2) and its margin."""
  start, margin, _, _ = _search(logits_fn, key, x, y, eps, lo, hi, **static)
  x0 = start()
  m0, bad0 = margin(x0, static['num_queries'])
  return x0, m0, bad0


@functools.partial(jax.jit, static_argnames=_STATIC)
def _square_queries(logits_fn, key, x, y, eps, lo, hi, x_best, m_min, queries, bad, i0, i1, **static):
  """Queries i0 .. i1−1 (a `while_loop` that also ends once every example is broken)."""
  _, margin, propose, _ = _search(logits_fn, key, x, y, eps, lo, hi, **static)

  def cond(state):
    i, _, m_min, _, _ = state
    return (i < i1) & jnp.any(m_min > 0)

  def body(state):
    i, x_best, m_min, queries, bad = state
    active = m_min > 0
    x_new = propose(i, x_best)
    m, bad_i = margin(x_new, i)
    accept = active & ((m < m_min) | (m <= 0))
    x_best = jnp.where(accept.reshape((-1,) + (1,) * (x.ndim - 1)), x_new, x_best)
    return i + 1, x_best, jnp.where(accept, m, m_min), queries + active, bad | (active & bad_i)

  _, x_best, m_min, queries, bad = jax.lax.while_loop(
    cond, body, (jnp.asarray(i0), x_best, m_min, queries, bad)
  )
  return x_best, m_min, queries, bad


def _stages(num_queries: int):
  """Query counts after which the broken examples are dropped: 50, 100, 200, ... (doubling)."""
  out, q = [], 50
  while q < num_queries:
    out.append(q)
    q *= 2
  return out + [num_queries]


@functools.partial(jax.jit, static_argnames=_STATIC)
def _square_recheck(logits_fn, key, x, y, eps, lo, hi, x_best, i0, **static):
  """The best points' margin over `eot_samples` fresh draws: (mean, standard deviation, bad)."""
  *_, recheck = _search(logits_fn, key, x, y, eps, lo, hi, **static)
  return recheck(x_best, i0)


# A point is far from breaking when its mean margin exceeds this many standard errors.
_FAR_Z = 4.0


def _square_impl(logits_fn, key, x, y, eps, lo, hi, *, far_draws=None, **static):
  """(x_adv, non-finite flags, queries per example, broken, far stages per example).

  Called with concrete arrays, the broken examples are dropped after 50, 100, 200, ... queries
  and the search goes on with the others only (padded to a power-of-two batch), which is what
  makes Square cheap on a weak model. Every example's search depends on its own key only, so
  this gives each example the result of one long search. With `far_draws`, each stage first
  re-measures the standing points' margins and runs those far from breaking on `far_draws` draws
  (module docstring). Inside a caller's trace it is one `while_loop` over the whole batch, every
  query on `eot_samples` draws.
  """
  b = x.shape[0]
  x_best, m_min, bad = _square_start(logits_fn, key, x, y, eps, lo, hi, **static)
  queries = jnp.ones((b,), jnp.int32)
  far_stages = np.zeros((b,), np.int32)
  if _checks.concrete(m_min) is None:
    x_best, m_min, queries, bad = _square_queries(
      logits_fn, key, x, y, eps, lo, hi, x_best, m_min, queries, bad, 0, static['num_queries'], **static
    )
    return jax.lax.stop_gradient(x_best), bad, queries, m_min <= 0, jnp.asarray(far_stages)
  # The batch (x_best) stays on its devices; only per-point numbers (margins, queries, flags,
  # the stage's index sets) come to the host, which decides who goes on.
  best = [x_best]
  m_min, queries, bad = (np.array(v) for v in (m_min, queries, bad))
  points = (m_min, queries, bad)
  sequential = far_draws is not None and far_draws < static['eot_samples']
  # Points that only `far_draws` draws called broken: re-measured before they count as broken.
  unconfirmed = np.zeros((b,), bool)

  def sub_batch(idx):
    size = min(b, 1 << int(np.ceil(np.log2(idx.size))))
    sub = np.concatenate([idx, np.full(size - idx.size, idx[-1])])
    j = jnp.asarray(sub)
    return sub, j, (key[j], x[j], y[j], _loop.take(eps, j, b), _loop.take(lo, j, b), _loop.take(hi, j, b))

  def run(idx, i0, i1, settings):
    sub, j, args = sub_batch(idx)
    out = _square_queries(
      logits_fn, *args, best[0][j], *(jnp.asarray(v[sub]) for v in points), i0, i1, **settings
    )
    best[0] = best[0].at[jnp.asarray(idx)].set(out[0][: idx.size])
    for v, o in zip(points, out[1:]):
      v[idx] = np.asarray(o)[: idx.size]

  def recheck(i0):
    """Re-measures the standing (and unconfirmed) points on fresh draws; returns which are far."""
    idx = np.flatnonzero((m_min > 0) | unconfirmed)
    if idx.size == 0:
      return idx, np.zeros((0,), bool)
    sub, j, args = sub_batch(idx)
    m, sd, bad_r = (
      np.asarray(v)[: idx.size] for v in _square_recheck(logits_fn, *args, best[0][j], i0, **static)
    )
    m_min[idx] = m
    bad[idx] |= bad_r
    unconfirmed[idx] = False
    keep = m > 0
    return idx[keep], m[keep] > _FAR_Z * sd[keep] / np.sqrt(far_draws)

  i0 = 0
  for i1 in _stages(static['num_queries']):
    if sequential:
      idx, far = recheck(i0)
    else:
      idx, far = np.flatnonzero(m_min > 0), None
    if idx.size == 0:
      break
    if far is None:
      run(idx, i0, i1, static)
    else:
      if (~far).any():
        run(idx[~far], i0, i1, static)
      if far.any():
        run(idx[far], i0, i1, dict(static, eot_samples=far_draws))
        far_stages[idx[far]] += 1
        unconfirmed[idx[far]] = m_min[idx[far]] <= 0
    i0 = i1
  if sequential and unconfirmed.any():
    recheck(i0)
  x_best = best[0]
  return jnp.asarray(x_best), jnp.asarray(bad), jnp.asarray(queries), jnp.asarray(m_min <= 0), far_stages


def square(
  logits_fn: _checks.LogitsFn,
  key,
  x,
  y,
  *,
  epsilon,
  norm: str = 'linf',
  num_queries: int = 5000,
  p_init: float = 0.8,
  targeted: bool = False,
  bounds=(0.0, 1.0),
  eot_samples: int = 1,
  far_draws: int | None = None,
  microbatch: int = 0,
  rescale_schedule: bool = False,
  reference_windows: bool = False,
  return_queries: bool = False,
):
  """Square Attack (margin loss), L∞ or L2, one compiled program; no gradient is computed.

  Args:
    logits_fn: `logits_fn(x, key) -> logits`; only its values are used.
    key: PRNG key, or one key per example (then an example attacked alone equals it inside a
      batch).
    x: images (batch, height, width, channels) in `bounds`.
    y: labels (targets if `targeted`).
    epsilon: radius, scalar or (B,).
    norm: 'linf' or 'l2'.
    num_queries: the query budget per example (5000 in AutoAttack); each example stops when
      broken.
    p_init: the initial fraction of pixels a query changes (0.8).
    targeted: reach class y instead of leaving it.
    bounds: (lo, hi).
    eot_samples: for randomised models, the margin is averaged over this many draws, so a step is
      kept only if the average improves.
    far_draws: with `eot_samples`, the draws per query of points far from breaking (a sequential
      test at each stage boundary, module docstring); None: every query averages `eot_samples`.
      Applies on concrete inputs (inside a caller's trace every query averages `eot_samples`).
    microbatch: with EOT, evaluate the draws in chunks of this many examples (0: the whole batch
      at once). Faster on the CPU for models whose batch of B × eot_samples images leaves the
      cache; chunks draw their own noise, so a stochastic model's result changes with it, while a
      deterministic model's does not.
    rescale_schedule: scale the schedule of p to the budget (the reference's `resc_schedule`;
      AutoAttack uses False).
    reference_windows: draw window positions as the reference does, never at the last row or
      column (its `random_int(0, n − s)` excludes its upper end); for parity measurements only:
      by default every position is drawn, which breaks a few more points.
    return_queries: also return the queries spent per example.

  Returns:
    x_adv (and the queries per example with `return_queries`).
  """
  name = 'square'
  _checks.check_norm(name, norm)
  _checks.check_inputs(
    logits_fn,
    x,
    y,
    name=name,
    key=key,
    bounds=bounds,
    values={'epsilon': epsilon, 'p_init': p_init},
    counts={'num_queries': num_queries, 'eot_samples': eot_samples},
    min_classes=2,
  )
  if isinstance(microbatch, bool) or not isinstance(microbatch, (int, np.integer)) or microbatch < 0:
    raise ValueError(f'{name}: microbatch must be an integer ≥ 0 (0: the whole batch), got {microbatch!r}')
  if far_draws is not None and (
    isinstance(far_draws, bool)
    or not isinstance(far_draws, (int, np.integer))
    or not 1 <= far_draws <= eot_samples
  ):
    raise ValueError(
      f'{name}: far_draws must be None or an integer in [1, eot_samples = {eot_samples}], got {far_draws!r}'
    )
  if x.ndim != 4:
    raise ValueError(f'{name}: x must be images of shape (batch, height, width, channels), got {x.shape}')
  if not 0 < p_init <= 1:
    raise ValueError(f'{name}: p_init must be in (0, 1], got {p_init}')
  # One key per example, so that dropping broken examples leaves the others' draws unchanged.
  key = _attack_keys.as_typed(key)
  if not _attack_keys.is_key_batch(key, x.shape[0]):
    key = _attack_keys.per_example_keys(key, x.shape[0])
  x_adv, bad, queries, _, _ = _square_impl(
    _loop.as_pytree_fn(logits_fn),
    key,
    x,
    y,
    epsilon,
    bounds[0],
    bounds[1],
    num_queries=num_queries,
    norm=norm,
    p_init=float(p_init),
    targeted=targeted,
    rescale=rescale_schedule,
    eot_samples=eot_samples,
    far_draws=None if far_draws is None else int(far_draws),
    microbatch=int(microbatch),
    reference_windows=bool(reference_windows),
  )
  _checks.check_logits_finite(name, bad)
  x_adv, queries = _devices.keep_sharding(x_adv, x), _devices.keep_sharding(queries, y)
  return (x_adv, queries) if return_queries else x_adv
