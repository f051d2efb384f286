"""Randomized smoothing: the Gaussian-smoothed classifier, its prediction and its certified L2 radius.

The smoothed classifier g(x) = argmax_c P(f(x + σε) = c), ε ~ N(0, I), is constant on the L2 ball
of radius σ·Φ⁻¹(p_A) around x whenever the top class has probability at least p_A ≥ ½ (Cohen et
al., Theorem 1). Its probabilities are estimated by counting the base classifier's votes over
noise draws: `class_counts` does the counting in one compiled program (draws in passes of
`draws_per_pass` per example, a scan over passes, so memory stays bounded at any n); the
statistics (a binomial test, a Clopper–Pearson bound) run on the host with scipy.

Keys: each example has its own key (given, or `fold_in(key, i)`), and the draws of PREDICT, of
CERTIFY's selection and of its estimate come from named tags folded into it (`keys.py`); draw d
of an example is `normal(fold_in(that key, d))`. An example certified alone therefore sees the
same noise as inside a batch, and the n0 selection draws never reappear among the n estimate
draws.

A stochastic base classifier. The guarantee rests on independent votes. A deterministic base
classifier ignores its key, so one call per pass serves all its draws. A stochastic one (PNI's
weight noise, LWTA's winners) may draw its randomness once per call, and then all the draws of a
pass would share one draw of it: correlated votes, and a certificate for a coin flip. So every
noise draw is its own call with its own model key (vmapped, slower), the votes are independent
and the certificate is that of the smoothed classifier P(f_ω(x + ε) = c) over both the noise ε
and the model's own randomness ω, unless the base classifier is known to be deterministic:
`stochastic_base` says how. None (the default) shares one call per pass only for a `logits_fn`
declared deterministic (`make_logits_fn` of a model whose traits say so) and gives a plain,
undeclared function a key per draw; True gives every draw its own key; False shares one call per
pass (the caller vouches that the function ignores its key). A `logits_fn` declared stochastic is
refused unless `stochastic_base=True` says that its randomness is drawn per draw.

References:
  Cohen, Rosenfeld & Kolter 2019, Certified Adversarial Robustness via Randomized Smoothing,
    ICML, arXiv:1902.02918 (PREDICT and CERTIFY)
  Salman et al. 2019, Provably Robust Deep Learning via Adversarially Trained Smoothed
    Classifiers, NeurIPS, arXiv:1906.04584 (the smoothed soft classifier attacked by SmoothAdv)
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from jaxrobust import keys
from jaxrobust.attacks._attack_keys import per_example_keys
from jaxrobust.attacks._loop import as_pytree_fn

ABSTAIN = -1


class Certificate(NamedTuple):
  """CERTIFY's answer per example (host arrays).

  Attributes:
    prediction: the smoothed classifier's class, or ABSTAIN (−1).
    radius: the certified L2 radius σ·Φ⁻¹(p_A) (0 where it abstains).
    p_lower: the one-sided (1 − α) Clopper–Pearson lower bound of the top class's probability.
    counts: (B, num_classes) votes of the n estimate draws.
  """

  prediction: np.ndarray
  radius: np.ndarray
  p_lower: np.ndarray
  counts: np.ndarray


def _is_real(v) -> bool:
  # numpy scalars count (np.float32(0.25) is a number); booleans do not.
  return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _check(sigma, alpha, **counts) -> None:
  if not (_is_real(sigma) and math.isfinite(sigma) and sigma > 0):
    raise ValueError(f'sigma must be a finite number > 0, got {sigma!r}')
  if alpha is not None and not (
    _is_real(alpha) and not isinstance(alpha, (int, np.integer)) and 0.0 < alpha < 1.0
  ):
    raise ValueError(f'alpha must be a float in (0, 1), got {alpha!r}')
  for name, v in counts.items():
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
      raise ValueError(f'{name} must be an integer ≥ 1, got {v!r}')


def _check_x(x) -> jax.Array:
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f'x must be a float array in [0, 1], got dtype {x.dtype}')
  if x.ndim < 2:
    raise ValueError(f'x must be a batch (B, ...), got shape {x.shape}')
  if x.shape[0] == 0:  # a certified accuracy over no example is undefined
    raise ValueError(f'x is an empty batch (shape {x.shape})')
  if not bool(jnp.isfinite(x).all()):
    raise ValueError('x holds non-finite values')
  lo, hi = float(x.min()), float(x.max())
  if lo < 0.0 or hi > 1.0:
    # A radius certified around normalised (or 0..255) inputs is not a radius in pixel space.
    raise ValueError(
      f'x must lie in [0, 1] (normalisation belongs inside the model), got values in [{lo:.4g}, {hi:.4g}]'
    )
  return x


def declared_stochastic(logits_fn) -> bool | None:
  """What a `logits_fn` declares of its randomness: True or False for one made by
  `make_logits_fn` (its model's declared traits), None for a plain function (undeclared)."""
  declared = getattr(getattr(logits_fn, 'func', None), 'stochastic', None)
  return declared if isinstance(declared, bool) else None


def _check_base(logits_fn, stochastic_base: bool | None) -> bool:
  """Whether every draw gets its own call and model key (module docstring, "A stochastic base")."""
  if stochastic_base is not None and not isinstance(stochastic_base, bool):
    raise TypeError(f'stochastic_base must be None, True or False, got {stochastic_base!r}')
  declared = declared_stochastic(logits_fn)
  if declared and stochastic_base is not True:
    raise ValueError(
      'logits_fn is declared stochastic (its model draws noise in the forward pass): votes that '
      'share one model key are not independent and would certify a coin flip. Pass '
      'stochastic_base=True to give every noise draw its own model key (the certificate is then '
      "the smoothed classifier's over the noise and the model's own randomness), or certify the "
      'deterministic model.'
    )
  if stochastic_base is None:
    return declared is not False  # shared calls only for a function declared deterministic
  return stochastic_base


@functools.partial(jax.jit, static_argnames=('n', 'draws_per_pass', 'stochastic_base'))
def _counts(logits_fn, example_keys, x, sigma, *, n: int, draws_per_pass: int, stochastic_base: bool):
  b = x.shape[0]
  passes = -(-n // draws_per_pass)
  k_model = jax.random.fold_in(example_keys[0], keys.TAG_SMOOTH_MODEL)

  def draw_logits(noisy, p, d):
    if not stochastic_base:
      return logits_fn(noisy, jax.random.fold_in(k_model, p))
    # One call per draw, each with its own key: fold_in(example key, TAG_SMOOTH_MODEL), then d.
    draw_keys = jax.vmap(
      lambda k: jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(k, keys.TAG_SMOOTH_MODEL), i))(d)
    )(example_keys).reshape(-1)
    return jax.vmap(lambda xi, k: logits_fn(xi[None], k)[0])(noisy, draw_keys)

  def one_pass(carry, p):
    counts, bad = carry
    d = p * draws_per_pass + jnp.arange(draws_per_pass)
    noise = jax.vmap(
      lambda k: jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(k, i), x.shape[1:], x.dtype))(d)
    )(example_keys)
    noisy = (x[:, None] + sigma * noise).reshape((b * draws_per_pass,) + x.shape[1:])
    logits = draw_logits(noisy, p, d).reshape(b, draws_per_pass, -1)
    live = (d < n)[None, :]
    votes = jax.nn.one_hot(jnp.argmax(logits, -1), logits.shape[-1], dtype=jnp.int32) * live[..., None]
    bad = bad | (~jnp.isfinite(logits).all(-1) & live).any()
    return (counts + votes.sum(1), bad), None

  num_classes = jax.eval_shape(logits_fn, x[:1], k_model).shape[-1]
  init = (jnp.zeros((b, num_classes), jnp.int32), jnp.asarray(False))
  (counts, bad), _ = jax.lax.scan(one_pass, init, jnp.arange(passes))
  return counts, bad


def class_counts(
  logits_fn,
  key,
  x,
  *,
  sigma: float,
  n: int,
  tag: int = keys.TAG_SMOOTH_ESTIMATE,
  draws_per_pass: int = 100,
  stochastic_base: bool | None = None,
):
  """Votes of the base classifier over n Gaussian draws per example: (B, num_classes) int32.

  Args:
    logits_fn: `logits_fn(x, key) -> logits`, the base classifier.
    key: a PRNG key, or one key per example (shape (B,)).
    x: inputs (B, ...) in [0, 1] (the noisy copies are not clipped, as in the paper).
    sigma: the noise's standard deviation.
    n: draws per example.
    tag: the named tag (keys.py) folded into each example's key for these draws.
    draws_per_pass: draws per example per forward pass (memory: B·draws_per_pass images).
    stochastic_base: True: every draw is its own call with its own model key (required for a
      `logits_fn` declared stochastic); False: one call per pass (the function ignores its key);
      None: False only for a `logits_fn` declared deterministic (module docstring).

  Raises:
    FloatingPointError: a logit of some draw is not finite.
    ValueError: a declared-stochastic `logits_fn` without `stochastic_base=True`.
  """
  _check(sigma, None, n=n, draws_per_pass=draws_per_pass)
  stochastic_base = _check_base(logits_fn, stochastic_base)
  x = _check_x(x)
  ek = jax.vmap(lambda k: jax.random.fold_in(k, tag))(per_example_keys(key, x.shape[0]))
  counts, bad = _counts(
    as_pytree_fn(logits_fn),
    ek,
    x,
    float(sigma),
    n=n,
    draws_per_pass=min(draws_per_pass, n),
    stochastic_base=stochastic_base,
  )
  if bool(bad):
    raise FloatingPointError('the base classifier returned non-finite logits on a noisy draw')
  return np.asarray(counts)


def clopper_pearson_lower(successes, trials: int, alpha: float) -> np.ndarray:
  """The one-sided (1 − α) Clopper–Pearson lower confidence bound of a binomial proportion.

  Raises:
    ValueError: trials not an integer ≥ 1, successes outside [0, trials], or α outside (0, 1).
  """
  if not _is_real(alpha) or not 0.0 < alpha < 1.0:
    raise ValueError(f'alpha must be a number in (0, 1), got {alpha!r}')
  if isinstance(trials, bool) or not isinstance(trials, (int, np.integer)) or trials < 1:
    raise ValueError(f'trials must be an integer ≥ 1, got {trials!r}')
  successes = np.asarray(successes)
  if successes.size and (successes.min() < 0 or successes.max() > trials):
    raise ValueError(
      f'successes must lie in [0, trials={trials}], got [{successes.min()}, {successes.max()}]'
    )
  safe = np.maximum(successes, 1)
  return np.where(successes > 0, stats.beta.ppf(alpha, safe, trials - successes + 1), 0.0)


def smooth_predict(
  logits_fn,
  key,
  x,
  *,
  sigma: float,
  n: int,
  alpha: float,
  draws_per_pass: int = 100,
  stochastic_base: bool | None = None,
) -> np.ndarray:
  """PREDICT: the smoothed class, or ABSTAIN when a two-sided binomial test cannot tell the top
  two classes apart at level α (then the probability of returning a wrong class is at most α).

  Returns:
    (B,) int classes, ABSTAIN (−1) where it abstains.
  """
  _check(sigma, alpha, n=n)
  counts = class_counts(
    logits_fn,
    key,
    x,
    sigma=sigma,
    n=n,
    tag=keys.TAG_SMOOTH_PREDICT,
    draws_per_pass=draws_per_pass,
    stochastic_base=stochastic_base,
  )
  order = np.argsort(-counts, axis=1, kind='stable')
  top, second = order[:, 0], order[:, 1]
  n_a = counts[np.arange(len(top)), top]
  n_b = counts[np.arange(len(top)), second]
  p = np.array(
    [stats.binomtest(int(a), int(a + b), 0.5).pvalue if a + b > 0 else 1.0 for a, b in zip(n_a, n_b)]
  )
  return np.where(p <= alpha, top, ABSTAIN)


def smooth_certify(
  logits_fn,
  key,
  x,
  *,
  sigma: float,
  n0: int,
  n: int,
  alpha: float,
  draws_per_pass: int = 100,
  stochastic_base: bool | None = None,
) -> Certificate:
  """CERTIFY: choose the top class on n0 draws, bound its probability from below on n fresh draws,
  and certify the L2 radius σ·Φ⁻¹(p_A); abstain when p_A < ½.

  With probability at least 1 − α over the draws, a returned class is the smoothed classifier's
  prediction at every point within the returned radius.

  Args:
    logits_fn: `logits_fn(x, key) -> logits`, the base classifier.
    key: a PRNG key, or one key per example (shape (B,)).
    x: inputs (B, ...) in [0, 1].
    sigma: the noise's standard deviation.
    n0: selection draws; n: estimate draws.
    alpha: the failure probability.
    draws_per_pass: draws per example per forward pass.
    stochastic_base: the base classifier draws randomness from its key; see `class_counts`.

  Raises:
    ValueError: a declared-stochastic `logits_fn` without `stochastic_base=True`, or bad counts.
  """
  _check(sigma, alpha, n0=n0, n=n)
  counts_of = functools.partial(
    class_counts,
    logits_fn,
    key,
    x,
    sigma=sigma,
    draws_per_pass=draws_per_pass,
    stochastic_base=stochastic_base,
  )
  select = counts_of(n=n0, tag=keys.TAG_SMOOTH_SELECT)
  counts = counts_of(n=n, tag=keys.TAG_SMOOTH_ESTIMATE)
  top = np.argmax(select, axis=1)
  p_lower = clopper_pearson_lower(counts[np.arange(len(top)), top], n, alpha)
  ok = p_lower >= 0.5
  radius = np.where(ok, sigma * stats.norm.ppf(np.clip(p_lower, 0.5, 1.0)), 0.0)
  return Certificate(np.where(ok, top, ABSTAIN), radius, p_lower, counts)


def certified_accuracy(certificate: Certificate, y, radii) -> np.ndarray:
  """For each radius r: the share of examples whose certified class is y with radius ≥ r.

  Raises:
    ValueError: labels of another shape than the certificate's, or a radius that is negative or
      not finite.
  """
  y = np.asarray(y)
  if y.shape != certificate.prediction.shape:
    raise ValueError(
      f'y must have shape {certificate.prediction.shape} (one label per example), got {y.shape}'
    )
  bad = [r for r in radii if not (math.isfinite(r) and r >= 0)]
  if bad:
    raise ValueError(f'radii must be finite and ≥ 0, got {bad}')
  right = certificate.prediction == y
  return np.array([float(np.mean(right & (certificate.radius >= r))) for r in radii])


def smoothed_soft_logits(logits_fn, *, sigma: float, samples: int):
  """The smoothed soft classifier as a `logits_fn`: log of the mean softmax over `samples`
  Gaussian draws (fresh from the key of each call). Cross-entropy on it is SmoothAdv's loss, so
  any attack of the library (PGD-L2 here) becomes an attack on the smoothed classifier."""
  _check(sigma, None, samples=samples)

  def fn(x, key):
    noise = jax.random.normal(key, (samples,) + x.shape, x.dtype)
    logits = jax.vmap(lambda e, k: logits_fn(x + sigma * e, k))(noise, jax.random.split(key, samples))
    return jax.nn.logsumexp(jax.nn.log_softmax(logits, -1), axis=0) - jnp.log(samples)

  return fn
