"""The adaptive protocol against a model that masks its gradients on purpose: a multiclass linear
model plus a zero-mean random term s_j·c·sin(k·(v_j·x)) per class, a random sign s_j per call. Its
expected logits are linear, so its exact L∞ robust accuracy is known in closed form; a single
draw's gradient is mostly the random term (c·k ≫ the linear weights)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrobust import attacks as A
from jaxrobust.evaluation.adaptive import prediction_over_draws
from jaxrobust.evaluation.estimator import wilson_interval
from tests.test_autoattack import K, exact_linf_robust

EPS, C, FREQ, N = 0.04, 0.005, 200.0, 400


@pytest.fixture(scope='module')
def masked():
  W = np.asarray(jax.random.normal(jax.random.key(1), (36, K))) * 0.4
  b = np.asarray(jax.random.normal(jax.random.key(2), (K,))) * 0.1
  V = np.asarray(jax.random.normal(jax.random.key(4), (36, K)))
  x = np.asarray(jax.random.uniform(jax.random.key(3), (N, 6, 6, 1)))  # 1 point = 4 examples
  y = np.argmax(x.reshape(N, -1) @ W + b, -1)

  def logits(W, b, V, x, key):
    xf = x.reshape(x.shape[0], -1)
    s = jnp.where(jax.random.bernoulli(key, 0.5, (x.shape[0], K)), 1.0, -1.0)
    return xf @ W + b + s * C * jnp.sin(FREQ * (xf @ V))

  f = jax.tree_util.Partial(logits, jnp.asarray(W), jnp.asarray(b), jnp.asarray(V))
  return f, W, b, x, y


def _robust(f, x_adv, y, n_draws=15):
  d = prediction_over_draws(f, jnp.asarray(x_adv), jnp.asarray(y), jax.random.key(9), n_draws)
  return float(d['majority'].mean())


@pytest.mark.long
def test_eot_attacks_reach_the_exact_accuracy_and_single_draw_pgd_does_not(masked):
  f, W, b, x, y = masked
  exact = exact_linf_robust(W, b, x, y, EPS)
  xs, ys = jnp.asarray(x), jnp.asarray(y)
  single = A.pgd(f, jax.random.key(5), xs, ys, epsilon=EPS, step_size=EPS / 10, num_steps=100)
  eot = A.pgd(
    f,
    jax.random.key(5),
    xs,
    ys,
    epsilon=EPS,
    step_size=EPS / 4,
    num_steps=100,
    eot_samples=128,
    step_schedule='cosine',
    loss='margin',
  )
  aa_rand, _ = A.autoattack(
    f, jax.random.key(6), xs, ys, epsilon=EPS, version='rand', eot_samples=32, num_steps=50
  )
  assert abs(_robust(f, eot, y) - exact) <= 0.01 + 1e-9, (_robust(f, eot, y), exact)
  assert abs(_robust(f, aa_rand, y) - exact) <= 0.01 + 1e-9, (_robust(f, aa_rand, y), exact)
  assert _robust(f, single, y) > exact + 0.04  # masked: far above
  assert exact < 0.8  # the ε makes a difference at all


@pytest.mark.long
def test_square_needs_no_gradient_and_the_masking_flag_fires(masked):
  f, W, b, x, y = masked
  exact = exact_linf_robust(W, b, x, y, EPS)
  xs, ys = jnp.asarray(x), jnp.asarray(y)
  x_sq = A.square(f, jax.random.key(7), xs, ys, epsilon=EPS, num_queries=1000, eot_samples=8)
  assert abs(_robust(f, x_sq, y) - exact) <= 0.01 + 1e-9
  # AutoAttack's standard version: its single-draw white-box attacks fail where Square does not.
  _, rep = A.autoattack(f, jax.random.key(8), xs, ys, epsilon=EPS, num_steps=10, num_queries=1000)
  assert rep['flags']['gradient_masking'] and rep['flags']['randomized']


def test_draw_accuracies_are_ordered_on_any_input():
  """all-N ≤ mean ≤ 1 and all-N ≤ majority, for random models and inputs (a property)."""
  for seed in range(5):
    k = jax.random.key(seed)
    W = jax.random.normal(k, (12, 4))
    f = lambda x, key, W=W: (4 * x - 2) @ W + 2.0 * jax.random.normal(key, (x.shape[0], 4))  # noqa: E731
    x = jax.random.uniform(jax.random.fold_in(k, 1), (64, 12))  # inputs live in [0, 1]
    y = jax.random.randint(jax.random.fold_in(k, 2), (64,), 0, 4)
    d = prediction_over_draws(f, x, y, jax.random.fold_in(k, 3), 7)
    assert np.all(d['all'] <= d['mean'] + 1e-12) and np.all(d['mean'] <= 1)
    assert np.all(d['all'] <= d['majority'])
    assert np.all((d['mean'] > 0.5) <= d['majority'])  # more than half the votes is a majority


def test_wilson_interval_covers_and_narrows():
  lo, hi = wilson_interval(50, 100)
  assert lo < 0.5 < hi and hi - lo == pytest.approx(0.19, abs=0.01)
  lo2, hi2 = wilson_interval(500, 1000)
  assert hi2 - lo2 < hi - lo
  assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0


@pytest.mark.long
def test_evaluate_adaptive_on_a_stochastic_lwta_network(tmp_path, monkeypatch):
  """The protocol runs on an LWTA network (its EOT attacks, both AutoAttacks, both transfers; the
  whole suite runs in test_experiments.py's converged-study test): both surrogates are attacked, every attack has
  its one-draw, mean, majority and all-N figures, and the worst case is the per-point minimum
  inside its interval. With a cache directory a rerun reads every piece back without calling the
  model, recomputes only a missing piece, waits for a piece another process holds only after
  `while_waiting` ran, and other settings are refused."""
  import fcntl
  import os
  import signal

  from jaxrobust.evaluation import adaptive
  from jaxrobust.evaluation import EvalSpec, build_evaluation
  from jaxrobust.evaluation.adaptive import evaluate_adaptive
  from jaxrobust.models import create_model, model_traits

  model = create_model('small_cnn_lwta', num_classes=4, width=1)
  variables = model.init(
    {'params': jax.random.key(0), 'stochastic': jax.random.key(1)}, jnp.zeros((1, 8, 8, 1))
  )
  x = np.asarray(jax.random.randint(jax.random.key(2), (12, 8, 8, 1), 0, 256), np.uint8)
  y = np.asarray(
    model.apply(variables, x / np.float32(255), rngs={'stochastic': jax.random.key(3)}).argmax(-1)
  )
  spec = EvalSpec(
    dataset='synthetic',
    suite='adaptive',
    measurement_draws=3,
    eot_samples=2,
    steps_scale=0.05,
    square_queries=40,
    batch_size=6,
  )
  plan = build_evaluation(spec, model_traits(model))
  # APGD-CE and APGD-DLR add nothing to what this test checks (compile time only); PGD, the EOT
  # attacks, both AutoAttacks and both transfers stay.
  plan = plan._replace(
    attacks={k: v for k, v in plan.attacks.items() if k in ('pgd', 'eot_pgd', 'eot_square')}
  )
  run = lambda key=jax.random.key(4), while_waiting=None, candidates_dir=None: evaluate_adaptive(  # noqa: E731
    model,
    variables,
    x,
    y,
    plan,
    key=key,
    cache_dir=str(tmp_path),
    while_waiting=while_waiting,
    candidates_dir=candidates_dir,
  ).to_record()
  res = run(candidates_dir=str(tmp_path / 'candidates'))
  assert set(res['seconds']) == {'clean'} | set(res['attacks']) and min(res['seconds'].values()) > 0
  # The stored candidates are the points that were scored: inside the ball, and scored again on
  # the batch's draws they give the scores the result holds.
  from jaxrobust.evaluation.accuracy import as_unit_float
  from jaxrobust.evaluation.estimator import SCORE_FIELDS, candidate_scores, draw_keys
  from jaxrobust import keys
  from jaxrobust.models import make_logits_fn

  f = make_logits_fn(model, variables)
  scores = res['per_example']['scores']
  for name in ['clean'] + list(res['attacks']):
    for i in (0, 6):
      c = np.load(tmp_path / 'candidates' / f'batch{i:07d}_{name}.npy', allow_pickle=False)
      clean = np.asarray(as_unit_float(x[i : i + 6]))
      assert c.dtype == np.float32 and 0 <= c.min() and c.max() <= 1
      assert np.abs(c - clean).max() <= (0 if name == 'clean' else plan.linf + 1e-6)
      again = candidate_scores(
        f, c, y[i : i + 6], draw_keys(keys.batch_keys(jax.random.key(4), i).estimator, 10, 3)
      )
      assert tuple(again) == SCORE_FIELDS
      for k, v in again.items():
        np.testing.assert_array_equal(np.asarray(scores[name][k][i : i + 6]), v, err_msg=f'{name} {k}')

  def no_model(*_):
    raise AssertionError('the model was called')

  monkeypatch.setattr(adaptive, 'make_logits_fn', lambda *_: no_model)
  assert run() == res  # every piece read back
  # A piece another process holds: this one does its other work, then takes the piece as stored.
  held = tmp_path / 'batch0000006_aa_rand.json'
  stored = held.read_text()
  held.unlink()
  other = os.open(tmp_path / 'batch0000006_aa_rand.lock', os.O_RDWR | os.O_CREAT)
  fcntl.flock(other, fcntl.LOCK_EX)

  def other_finishes():
    held.write_text(stored)
    os.close(other)

  def stuck(*_):
    raise AssertionError('evaluate_adaptive waited on the held piece without calling while_waiting')

  signal.signal(signal.SIGALRM, stuck)
  signal.alarm(60)
  try:
    assert run(while_waiting=other_finishes) == res
  finally:
    signal.alarm(0)
  (tmp_path / 'batch0000006_eot_pgd.json').unlink()
  with pytest.raises(AssertionError, match='the model was called'):
    run()
  with pytest.raises(ValueError, match=f'{tmp_path}.*key'):
    run(jax.random.key(5))
  # One attack's hyperparameter changed (EOT-Square's draws for far points) is another setting.
  stored_attacks = plan.attacks
  plan = plan._replace(attacks=dict(plan.attacks, eot_square=dict(plan.attacks['eot_square'], far_draws=2)))
  with pytest.raises(ValueError, match=f'{tmp_path}.*specs'):
    run()
  # Another temperature of an attack on the sampling is another setting too (the specs put back,
  # so that the sampling alone differs).
  plan = plan._replace(attacks=stored_attacks)
  low = plan.sampling['transfer_low_temperature']
  plan = plan._replace(
    sampling=dict(
      plan.sampling, transfer_low_temperature=low._replace(eval_temperature=low.eval_temperature / 2)
    )
  )
  with pytest.raises(
    ValueError, match=re.escape(f"{tmp_path} holds results of other settings (differing: ['sampling'])")
  ):
    run()
  assert {'transfer_argmax', 'transfer_mean_field', 'aa_standard', 'aa_rand', 'eot_pgd', 'eot_square'} <= set(
    res['attacks']
  )
  assert {'eot_expected_probability', 'eot_straight_through', 'transfer_low_temperature'} <= set(
    res['attacks']
  )
  for a in list(res['attacks'].values()) + [res['clean']]:
    assert a['all'] <= a['mean'] <= 1 and a['all'] <= a['majority']
  lo, hi = res['worst_case_interval']
  assert lo <= res['worst_case'] <= hi
  # The AND of independent votes is below every attack's vote by construction; the selected and
  # measured worst case is not (fresh draws), but it measured one candidate per point.
  assert res['and_of_majority_votes'] <= min(a['majority'] for a in res['attacks'].values())
  assert sum(res['worst_case_chosen'].values()) == res['n']
  assert set(res['worst_case_chosen']) == {'clean'} | set(res['attacks'])
  assert res['flags']['randomized'] and 'gradient_masking' in res['flags']


@pytest.mark.long
def test_eot_convergence_on_the_masked_model(masked, tmp_path):
  """More draws bring EOT-PGD down to the exact accuracy; the doubling test then says converged,
  and the figure is written."""
  from experiments import figures
  from jaxrobust.evaluation.adaptive import eot_convergence

  f, W, b, x, y = masked
  conv = eot_convergence(
    f,
    x[:200],
    y[:200],
    jax.random.key(3),
    epsilon=EPS,
    draws=(1,),
    steps=(50,),
    fixed_draws=64,
    fixed_steps=50,
  )
  exact = exact_linf_robust(W, b, x[:200], y[:200], EPS)
  assert conv['accuracy_vs_draws'][0] > conv['at_budget'] + 0.02  # one draw is masked
  assert abs(conv['at_double_budget'] - exact) <= 0.015 + 1e-9  # 128 draws, 100 steps: near exact
  assert conv['converged'] == (abs(conv['at_double_budget'] - conv['at_budget']) < 0.005)
  figures.plot_convergence(str(tmp_path / 'c.png'), conv, title='masked')  # as eot_convergence gives it
  figures.plot_convergence(str(tmp_path / 'n.png'), {**conv, 'n': 200}, title='masked')  # with bars
  assert (tmp_path / 'c.png').stat().st_size > 1000 and (tmp_path / 'n.png').stat().st_size > 1000


def test_eot_convergence_resumes_from_its_cache(masked, tmp_path):
  """Every point of the curves is stored; a rerun reads them back without calling the model; a
  cache without the model's identity is refused."""
  from jaxrobust.evaluation.adaptive import eot_convergence

  f, _, _, x, y = masked
  kw = dict(epsilon=EPS, draws=(1,), steps=(5,), fixed_draws=2, fixed_steps=5, cache_dir=str(tmp_path))
  with pytest.raises(ValueError, match='model_id'):
    eot_convergence(f, x[:20], y[:20], jax.random.key(3), **kw)
  first = eot_convergence(f, x[:20], y[:20], jax.random.key(3), model_id='masked', **kw)

  def no_model(*_):
    raise AssertionError('the model was called')

  assert eot_convergence(no_model, x[:20], y[:20], jax.random.key(3), model_id='masked', **kw) == first
  with pytest.raises(ValueError, match='model'):
    eot_convergence(f, x[:20], y[:20], jax.random.key(3), model_id='other', **kw)


def test_eot_convergence_judges_the_worst_case_not_only_eot_pgd(masked, tmp_path):
  """Given the suite's candidates, the doubled EOT-PGD joins them and the worst case is selected
  and measured again: a suite of the clean points alone moves down towards the doubled attack's
  accuracy (not converged, whatever EOT-PGD's own change); a suite that already holds the doubled
  attack's points does not move at all (the verdict is then EOT-PGD's own). Scores of the wrong
  length are named."""
  from jaxrobust.evaluation.adaptive import eot_convergence
  from jaxrobust.evaluation.estimator import candidate_scores, draw_keys

  f, _, _, x, y = masked
  x, y = x[:40], y[:40]
  kw = dict(epsilon=EPS, draws=(1,), steps=(5,), fixed_draws=2, fixed_steps=5)
  kw.update(cache_dir=str(tmp_path), model_id='masked')
  alone = eot_convergence(f, x, y, jax.random.key(3), **kw)
  double = np.asarray(alone['robust_at_double_budget'])
  assert double.shape == (40,) and abs(double.mean() - alone['at_double_budget']) < 1e-9
  assert 0 < double.mean() < 0.99  # the masked model: some points fall, not all
  assert 'worst_case' not in alone

  clean = candidate_scores(f, jnp.asarray(x), jnp.asarray(y), draw_keys(jax.random.key(5), 10, 10))
  clean = {k: np.asarray(v) for k, v in clean.items()}
  weak = eot_convergence(f, x, y, jax.random.key(3), worst_case_scores={'clean': clean}, **kw)
  assert weak['worst_case'] == clean['measure_majority'].mean()
  assert weak['worst_case_expected'] == pytest.approx(clean['measure_mean'].mean())
  assert weak['worst_case_with_double_budget'] <= weak['worst_case'] - 0.1, weak
  assert not weak['converged']

  scored = {k: np.asarray(v) for k, v in alone['scores_at_double_budget'].items()}
  already = eot_convergence(
    f, x, y, jax.random.key(3), worst_case_scores={'clean': clean, 'eot_pgd': scored}, **kw
  )
  assert already['worst_case'] == already['worst_case_with_double_budget']
  assert already['worst_case_expected'] == already['worst_case_expected_with_double_budget']
  assert already['converged'] == alone['converged']

  with pytest.raises(ValueError, match=r"worst_case_scores\['clean'\]\['select_margin'\] has shape \(39,\)"):
    short = dict(clean, select_margin=clean['select_margin'][:39])
    eot_convergence(f, x, y, jax.random.key(3), worst_case_scores={'clean': short}, **kw)


def test_eot_convergence_counts_no_prediction_noise_as_a_break(tmp_path):
  """Null test of the doubling test: a randomized model whose per-draw accuracy sits between 0.5
  and 0.95 and an ε too small to move it. The worst case with the doubled attack added equals
  the suite's within its sampling error; the AND of the suite's
  vote with the doubled attack's own vote (the statistic it replaced) falls visibly."""
  from jaxrobust.evaluation.adaptive import eot_convergence
  from jaxrobust.evaluation.estimator import candidate_scores, draw_keys

  n, sigma = 600, 1.0
  rng = np.random.default_rng(0)
  margins = rng.uniform(0.0, 1.6, n).astype(np.float32)
  x = np.tile(margins[:, None], (1, 4)) / 4  # w = 1: w·x = the margin
  y = np.ones(n, np.int32)

  def f(x, key):
    s = x.sum(-1) + sigma * jax.random.normal(key, (x.shape[0],))
    return jnp.stack([jnp.zeros_like(s), s], -1)

  clean = candidate_scores(f, jnp.asarray(x), jnp.asarray(y), draw_keys(jax.random.key(5), 10, 10))
  kw = dict(epsilon=1e-5, draws=(1,), steps=(2,), fixed_draws=1, fixed_steps=2)
  conv = eot_convergence(f, x, y, jax.random.key(3), worst_case_scores={'clean': clean}, **kw)
  before, after = conv['worst_case_expected'], conv['worst_case_expected_with_double_budget']
  and_of_votes = float(
    (np.asarray(clean['measure_majority']) & np.asarray(conv['robust_at_double_budget'])).mean()
  )
  sd = float(np.std(np.asarray(clean['measure_mean'])) / np.sqrt(n))
  msg = f'expected {before:.3f} → {after:.3f} (sd {sd:.3f}); majority {conv["worst_case"]:.3f} → '
  msg += f'{conv["worst_case_with_double_budget"]:.3f}; AND of the two votes {and_of_votes:.3f}'
  # Selection picks the lower of two equal candidates on noisy draws; the fresh measurement is
  # unbiased for what it picked, so nothing moves beyond the noise.
  assert abs(after - before) <= 4 * sd, msg
  assert abs(conv['worst_case_with_double_budget'] - conv['worst_case']) <= 4 * np.sqrt(0.25 / n) * 1.5, msg
  assert and_of_votes < conv['worst_case'] - 0.05, msg


def test_eot_convergence_in_gradient_chunks_keeps_a_deterministic_models_answer(masked, tmp_path):
  """microbatch= only chunks EOT-PGD's gradients: on a deterministic (linear) model every point
  keeps its result; it is a setting of the cache, so pieces computed without it are not mixed in."""
  from jaxrobust.evaluation.adaptive import eot_convergence

  _, W, b, x, y = masked
  linear = jax.tree_util.Partial(
    lambda W, b, x, key: x.reshape(x.shape[0], -1) @ W + b, jnp.asarray(W), jnp.asarray(b)
  )
  kw = dict(epsilon=EPS, draws=(1,), steps=(5,), fixed_draws=2, fixed_steps=5, model_id='linear')
  whole = eot_convergence(linear, x[:30], y[:30], jax.random.key(3), cache_dir=str(tmp_path), **kw)
  chunked = eot_convergence(linear, x[:30], y[:30], jax.random.key(3), microbatch=4, **kw)
  assert whole.pop('seconds') > 0 and chunked.pop('seconds') > 0  # times differ, answers must not
  assert chunked == whole and 0 < whole['at_budget'] < 1
  with pytest.raises(ValueError, match='microbatch must be >= 0'):  # it reaches the attack
    eot_convergence(linear, x[:30], y[:30], jax.random.key(3), microbatch=-1, **kw)
  with pytest.raises(ValueError, match=r"differing: \['microbatch'\]"):
    eot_convergence(linear, x[:30], y[:30], jax.random.key(3), cache_dir=str(tmp_path), microbatch=4, **kw)


def test_piece_cache_sets_a_broken_file_aside_and_computes_it_again(tmp_path):
  from jaxrobust.evaluation.cache import PieceCache

  cache = PieceCache(str(tmp_path), {'a': 1})
  assert cache.get('p', lambda: [1, 2]) == [1, 2]
  assert cache.get('p', lambda: [3]) == [1, 2]  # computed once
  for broken in (b'[1,', b'\xff\xfe not utf-8'):
    (tmp_path / 'p.json').write_bytes(broken)
    with pytest.warns(UserWarning, match=r'p.json: .*not valid JSON.*set aside as .*p.json.rejected-\d'):
      assert cache.get('p', lambda: [3]) == [3]
  # nothing written is lost: both refused files are kept beside the recomputed piece
  assert sorted(f.read_bytes() for f in tmp_path.glob('p.json.rejected-*')) == [b'[1,', b'\xff\xfe not utf-8']
  with pytest.raises(ValueError, match=f'{tmp_path}.*differing.*a'):
    PieceCache(str(tmp_path), {'a': 2})


def _flips(path):
  """Every single-bit flip of a file's bytes (one byte at a time, every bit)."""
  data = path.read_bytes()
  for i in range(len(data)):
    for bit in range(8):
      yield data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1 :]


def test_no_single_bit_flip_of_a_piece_is_read_as_a_result(tmp_path):
  """A flipped `0` → `1` or `false` → `true` kept a piece's keys, types and lengths and went
  straight into the results. Every flip of every byte of a stored piece is now refused (bad
  bytes, bad JSON, checksum or settings digest) or, at worst, decodes to the same value."""
  import json

  from jaxrobust.evaluation.cache import PieceCache, unseal

  piece = {'mean': [1.0, 0.0, 0.5], 'all': [True, False, True]}
  cache = PieceCache(str(tmp_path), {'model': 'm'})
  cache.get('p', lambda: piece)
  wrong, refused, flips = [], 0, 0
  for flipped in _flips(tmp_path / 'p.json'):
    flips += 1
    try:
      value, why = unseal(json.loads(flipped.decode('utf-8')), cache.settings_id)
    except (UnicodeDecodeError, json.JSONDecodeError):
      value, why = None, 'not JSON'
    refused += why is not None
    if why is None and value != piece:
      wrong.append(value)
  assert flips > 500 and refused > 0.9 * flips and not wrong, wrong[:3]
  # the same path through the cache: a flipped piece is set aside and computed again
  data = bytearray((tmp_path / 'p.json').read_bytes())
  data[data.index(b'false')] ^= 0x20  # 'f' -> 'F': invalid JSON
  (tmp_path / 'p.json').write_bytes(bytes(data))
  with pytest.warns(UserWarning, match='set aside'):
    assert PieceCache(str(tmp_path), {'model': 'm'}).get('p', lambda: 'recomputed') == 'recomputed'


def test_a_removed_settings_file_does_not_let_another_models_pieces_in(tmp_path):
  """Its error message once said 'remove the file to recompute it'; doing so after the weights
  changed reused the old model's pieces. Every piece carries the digest of its own settings."""
  from jaxrobust.evaluation.cache import PieceCache

  assert PieceCache(str(tmp_path), {'model': 'old'}).get('p', lambda: 'old result') == 'old result'
  (tmp_path / 'settings.json').unlink()
  with pytest.warns(UserWarning, match='computed under other settings'):
    assert PieceCache(str(tmp_path), {'model': 'new'}).get('p', lambda: 'new result') == 'new result'
  # A damaged settings.json is set aside too; the pieces still answer to this run's settings.
  (tmp_path / 'settings.json').write_text('{"format": "jaxrobust-piece-1"')
  with pytest.warns(UserWarning, match='settings.json: .*set aside'):
    cache = PieceCache(str(tmp_path), {'model': 'new'})
  assert cache.get('p', lambda: 'again') == 'new result'


def test_processes_sharing_a_piece_cache_split_the_pieces_and_compute_each_once(tmp_path):
  """flock locks belong to open files, so two threads opening the lock files stand for two
  processes. Each piece must be computed exactly once, both workers must do some, and both must
  return every piece, the ones the other computed included."""
  import threading

  from jaxrobust.evaluation.cache import PieceCache

  names = [f'p{i}' for i in range(12)]
  computed, results = [], {}
  start = threading.Barrier(2)
  started = (threading.Event(), threading.Event())

  def worker(w):
    cache = PieceCache(str(tmp_path), {'a': 1})

    def compute(name):
      computed.append((w, name))
      # Each worker's first piece waits until the other worker holds one too: the split is
      # forced by the pieces' locks, not by timing.
      started[w].set()
      assert started[1 - w].wait(timeout=600)  # generous: a starved machine is slow, not wrong
      return {'value': name.upper()}

    start.wait()
    results[w] = cache.get_all({n: (lambda n=n: compute(n)) for n in names})

  threads = [threading.Thread(target=worker, args=(w,)) for w in (0, 1)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert sorted(n for _, n in computed) == sorted(names)  # each once
  assert {w for w, _ in computed} == {0, 1}  # the work was split
  expected = {n: {'value': n.upper()} for n in names}
  assert results[0] == expected and results[1] == expected
  assert not list(tmp_path.glob('*.lock'))  # no lock left behind once a piece is stored


def test_a_piece_stored_between_the_check_and_the_lock_leaves_no_lock_file(tmp_path):
  """The race that left stale locks: a process finds no piece, the holder stores it and removes
  its lock file, and the process then creates the lock file anew, takes it and finds the piece.
  It must return the piece, compute nothing and remove the file it created."""
  from jaxrobust.evaluation import cache as cache_module
  from jaxrobust.evaluation.cache import PieceCache

  holder = PieceCache(str(tmp_path), {'a': 1})
  late = PieceCache(str(tmp_path), {'a': 1})
  real = late._stored
  calls = []

  def stored_after_the_first_look(path, *, set_aside=True):
    calls.append(path)
    if len(calls) == 1:  # the first look, before the holder stored the piece
      assert holder.get('p', lambda: {'v': 1}) == {'v': 1}
      return cache_module._MISSING
    return real(path, set_aside=set_aside)

  late._stored = stored_after_the_first_look
  assert late.get_all({'p': lambda: pytest.fail('computed a stored piece')}) == {'p': {'v': 1}}
  assert len(calls) == 2 and not list(tmp_path.glob('*.lock'))


def test_a_piece_whose_holder_died_is_computed_by_the_next_process(tmp_path):
  from jaxrobust.evaluation.cache import PieceCache

  cache = PieceCache(str(tmp_path), {'a': 1})
  with pytest.raises(RuntimeError):
    cache.get_all({'p': lambda: (_ for _ in ()).throw(RuntimeError('killed'))})
  assert (tmp_path / 'p.lock').exists()  # left behind, but no longer held
  assert cache.get_all({'p': lambda: 7}) == {'p': 7}


def test_a_process_left_with_held_pieces_does_other_work_before_it_waits(tmp_path):
  """Another process (a lock taken through a second open file) holds p1: this one computes p0,
  then calls while_waiting exactly once, then takes the other's p1 as stored instead of
  recomputing it. With nothing held, while_waiting is never called."""
  import fcntl
  import os
  import threading

  from jaxrobust.evaluation.cache import PieceCache, seal
  from jaxrobust.files import write_json_atomic

  cache = PieceCache(str(tmp_path), {'a': 1})
  other = os.open(tmp_path / 'p1.lock', os.O_RDWR | os.O_CREAT)
  fcntl.flock(other, fcntl.LOCK_EX)
  calls = []

  def other_work():
    calls.append((tmp_path / 'p0.json').exists())  # after this process's own pieces
    write_json_atomic(str(tmp_path / 'p1.json'), seal('theirs', cache.settings_id))  # the other finishes p1
    os.remove(tmp_path / 'p1.lock')
    os.close(other)

  got = {}
  run = lambda: got.update(cache.get_all({'p0': lambda: 'mine', 'p1': lambda: 'r'}, while_waiting=other_work))  # noqa: E731
  worker = threading.Thread(target=run, daemon=True)  # without the call it would wait forever
  worker.start()
  worker.join(timeout=30)
  assert not worker.is_alive(), 'get_all waited on the held piece without calling while_waiting'
  assert got == {'p0': 'mine', 'p1': 'theirs'} and calls == [True]
  never = lambda: pytest.fail('called with nothing held')  # noqa: E731
  assert cache.get_all({'p0': lambda: 0, 'p2': lambda: 2}, while_waiting=never) == {'p0': 'mine', 'p2': 2}


def test_while_waiting_needs_a_cache_to_wait_on():
  from jaxrobust.evaluation import EvalSpec, evaluate_model

  with pytest.raises(ValueError, match='while_waiting needs a cache_dir'):
    evaluate_model(
      None,
      None,
      None,
      None,
      EvalSpec(dataset='fashion_mnist', suite='adaptive'),
      key=None,
      while_waiting=lambda: 0,
    )


def test_the_eot_microbatch_reaches_eot_pgd_only_when_asked_and_only_in_the_adaptive_suite():
  from jaxrobust.evaluation import EvalSpec
  from jaxrobust.evaluation.suites import adaptive_attacks

  assert 'microbatch' not in adaptive_attacks('fashion_mnist')['eot_pgd']
  specs = adaptive_attacks('fashion_mnist', eot_microbatch=6)
  assert specs['eot_pgd']['microbatch'] == 6 and 'microbatch' not in specs['apgd_ce']
  with pytest.raises(ValueError, match='eot_microbatch'):
    EvalSpec(dataset='fashion_mnist', suite='standard', eot_microbatch=6)


def test_legacy_pieces_are_sealed_only_when_their_contents_are_vouched_for(tmp_path):
  """A directory written before pieces carried checksums: its raw pieces are set aside by the
  cache, unless sealed; sealing files that git does not hold unchanged needs --trust."""
  import json

  import importlib.util
  import pathlib

  from jaxrobust.evaluation.cache import PieceCache

  path = pathlib.Path(__file__).resolve().parents[1] / 'scripts' / 'seal_pieces.py'
  spec = importlib.util.spec_from_file_location('seal_pieces', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  seal_directory = module.seal_directory

  (tmp_path / 'settings.json').write_text(json.dumps({'model': 'm'}))
  (tmp_path / 'p.json').write_text(json.dumps([1, 2]))
  with pytest.raises(ValueError, match=r'git does not hold these files unchanged.*p.json'):
    seal_directory(str(tmp_path))
  assert seal_directory(str(tmp_path), trust=True) == 1
  assert seal_directory(str(tmp_path), trust=True) == 0  # already sealed
  assert PieceCache(str(tmp_path), {'model': 'm'}).get('p', lambda: 'recomputed') == [1, 2]
  with pytest.raises(ValueError, match='no settings.json'):
    seal_directory(str(tmp_path / 'absent'))


def test_the_suite_and_the_convergence_study_run_the_eot_pgd_their_docstring_names(masked, monkeypatch):
  """One EOT-PGD: cross-entropy, a constant step of ε/20 at 100 steps, 2 restarts; the suite's
  column and every point of the convergence study build exactly that spec."""
  from jaxrobust.evaluation import adaptive, suites

  spec = suites.adaptive_attacks('fashion_mnist', eot_samples=20)['eot_pgd']
  assert spec['loss'] == 'ce' and 'step_schedule' not in spec  # the attack's default schedule: constant
  assert (spec['num_steps'], spec['restarts'], spec['eot_samples']) == (100, 2, 20)
  assert spec['step_size'] == pytest.approx(spec['epsilon'] / 20)
  doc = suites.adaptive_attacks.__doc__ + suites.eot_pgd_spec.__doc__
  assert 'cross-entropy' in doc and 'constant' in doc and '2 restarts' in doc and 'cosine' not in doc
  built = []
  real = A.build_attack
  monkeypatch.setattr(adaptive.A, 'build_attack', lambda s: built.append(dict(s)) or real(s))
  f, _, _, x, y = masked
  adaptive.eot_convergence(
    f, x[:6], y[:6], jax.random.key(3), epsilon=EPS, draws=(2,), steps=(4,), fixed_draws=2, fixed_steps=4
  )
  assert built and all(
    b == suites.eot_pgd_spec(EPS, num_steps=b['num_steps'], eot_samples=b['eot_samples']) for b in built
  )


@pytest.mark.parametrize('arg', ['cache_dir', 'candidates_dir'])
def test_the_adaptive_suites_folders_are_refused_for_other_suites(arg):
  from jaxrobust.evaluation import EvalSpec, evaluate_model

  with pytest.raises(ValueError, match=f"{arg} is for the 'adaptive' suite, not 'standard'"):
    evaluate_model(
      None, None, None, None, EvalSpec(dataset='fashion_mnist', suite='standard'), key=None, **{arg: 'x'}
    )
