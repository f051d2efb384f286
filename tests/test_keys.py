"""The key schedule has one owner: no `fold_in` with a literal tag outside jaxrobust/keys.py."""

import pathlib
import re
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrobust import keys

ROOT = pathlib.Path(__file__).resolve().parents[1]
LITERAL_TAG = re.compile(r'fold_in\([^,()]+,\s*-?\d[\d_*]*\s*\)')
# A tag computed from indices (`1000 * j + s`, `2 * i + 1`): named helpers in keys.py instead.
ARITHMETIC_TAG = re.compile(r'fold_(?:in|keys)\([^,()]+,[^()]*[*+][^()]*\)')


def test_no_literal_fold_in_tag_outside_keys_py():
  found = [
    f'{p.relative_to(ROOT)}:{i}: {line.strip()}'
    for folder in ('jaxrobust', 'experiments')
    for p in sorted((ROOT / folder).rglob('*.py'))
    if p.name != 'keys.py'
    for i, line in enumerate(p.read_text().splitlines(), 1)
    if LITERAL_TAG.search(line) or ARITHMETIC_TAG.search(line)
  ]
  assert not found, 'name these tags in jaxrobust/keys.py:\n' + '\n'.join(found)
  assert LITERAL_TAG.search('jax.random.fold_in(key, 10**6)')  # the patterns themselves can match
  assert ARITHMETIC_TAG.search('jax.random.fold_in(key, 1000 * j + s)')
  assert not ARITHMETIC_TAG.search('jax.random.fold_in(key, keys.TAG_AA_SANITY)')


def test_no_arithmetic_fold_in_tag_anywhere():
  """Tests, benchmarks and scripts draw keys by split or by name too: an index-derived tag
  (`100 + j`) collides with another use of the same key as soon as the ranges meet."""
  found = [
    f'{p.relative_to(ROOT)}:{i}: {line.strip()}'
    for folder in ('tests', 'benchmarks', 'scripts')
    for p in sorted((ROOT / folder).rglob('*.py'))
    if p != pathlib.Path(__file__).resolve()  # this file holds the pattern's own examples
    for i, line in enumerate(p.read_text().splitlines(), 1)
    if ARITHMETIC_TAG.search(line)
  ]
  assert not found, 'split the key or name the tag in jaxrobust/keys.py:\n' + '\n'.join(found)


def test_keys_by_index_fold_one_index_at_a_time_and_never_collide():
  """A pair's key is its indices folded one level each (no `stride·major + minor`, under which the
  AutoAttack chunk start that once reached 1000 met another pair: 1000·1 + 1000 = 1000·2 + 0);
  FAB's two draws per step and CW's (round, step) draws are distinct for any index sizes."""
  root = jax.random.key(0)
  bits = lambda k: tuple(np.asarray(jax.random.key_data(k)).tolist())  # noqa: E731
  folded = jax.random.fold_in(jax.random.fold_in(root, 2), 7)
  assert bits(keys.pair_key(root, 2, 7)) == bits(folded)
  # A full evaluation's worth: 10 000 points in chunks of 500 (and of 1000), attacks 1..6.
  drawn = [bits(keys.pair_key(root, j, s)) for j in range(1, 7) for s in range(0, 10_000, 500)]
  drawn += [bits(keys.pair_key(root, j, s)) for j in range(1, 7) for s in range(10_000, 20_000, 1000)]
  assert len(set(drawn)) == len(drawn)
  with pytest.raises(ValueError, match='indices must be >= 0'):
    keys.pair_key(root, -1, 0)
  fab = [bits(k) for step in range(300) for k in keys.step_model_keys(root, step)]
  cw = [bits(keys.search_step_model_key(root, s, i)) for s in range(9) for i in range(1000)]
  assert len(set(fab)) == len(fab) and len(set(cw)) == len(cw)
  # The rounds of CW once shared one index line: (round 1, step 0) was (round 0, step `steps`).
  assert bits(keys.search_step_model_key(root, 1, 0)) != bits(keys.search_step_model_key(root, 0, 1000))


# ------------------------------------------------------------------ every key of an evaluation
# A superset of what any suite draws: more attacks, draws and chunks than any suite has, so that
# no two equal keys in it means none in any suite (tests below check the evaluator draws only keys
# of this set).
MAX_ATTACKS, MAX_DRAWS, SELECTION, AA_ATTACKS = 16, 20, 10, 6


def _data(ks) -> np.ndarray:
  return np.asarray(jax.random.key_data(jnp.stack(list(ks)) if isinstance(ks, list) else ks)).reshape(-1, 2)


def _under_attack(k_attack, batch: int) -> list:
  """An attack called with one key (every suite attack): its noise and model keys
  (`_attack_keys.split_attack_key`); what it draws below them is the attack's own."""
  from jaxrobust.attacks import _attack_keys

  return [_data(k_attack), _data(list(_attack_keys.split_attack_key(k_attack, batch)))]


_DRAWS = jax.jit(lambda key, n: jax.vmap(lambda d: keys.draw_key(key, d))(jnp.arange(n)), static_argnums=1)


def _draws(key, n=MAX_DRAWS) -> list:
  """Repeated passes on one key: draw_key(key, d), which is also jax.random.split(key, n)[d]."""
  return [_data(_DRAWS(key, n))]


def _part(part_key, n: int, batch: int) -> list:
  """Every key under one part of an evaluation (the suite, the draws, the grid, the finite check,
  the figures) for n images in batches."""
  from jaxrobust.evaluation.estimator import draw_keys

  out = []
  for i in range(0, n, batch):
    b = min(batch, n - i)
    kb = keys.batch_keys(part_key, i)
    out += [_data(list(kb))] + _draws(kb.clean)
    sel, meas = draw_keys(kb.estimator, SELECTION, MAX_DRAWS)
    out += [_data(jax.random.split(kb.estimator)), _data(sel), _data(meas)]
    for j in range(MAX_ATTACKS + 1):
      k_attack, k_predict = keys.attack_keys(kb, j)
      out += _under_attack(k_attack, b) + [_data(k_predict)] + _draws(k_predict)
  return out


def _autoattack(key, n: int, batch: int = 500) -> list:
  """Every key AutoAttack draws from its key (attacks/_autoattack.py), all points robust."""
  from jaxrobust.attacks import _attack_keys

  sanity = jax.random.fold_in(key, keys.TAG_AA_SANITY)
  checks = [keys.TAG_AA_CHECK_FIRST, keys.TAG_AA_CHECK_SECOND, keys.TAG_AA_CHECK_GRADIENT]
  out = [_data([sanity] + [jax.random.fold_in(sanity, t) for t in checks])]
  ex = _attack_keys.per_example_keys(jax.random.fold_in(key, keys.TAG_AA_EXAMPLES), n)
  clean = jax.random.fold_in(key, keys.TAG_AA_CLEAN)
  out += [_data(ex), _data(clean), _data([jax.random.fold_in(clean, i) for i in range(0, n, batch)])]
  for j in range(1, AA_ATTACKS + 1):
    kj = _attack_keys.fold_keys(ex, j)
    noise, _ = _attack_keys.split_attack_key(kj, n)
    out += [
      _data(kj),
      _data(noise),
      _data(jax.vmap(lambda k: jax.random.fold_in(k, keys.TAG_EXAMPLE_MODEL))(kj)),
    ]
    outcomes = jax.random.fold_in(key, keys.TAG_AA_OUTCOMES)
    out += [_data([keys.pair_key(outcomes, j, s) for s in range(0, n, batch)])]
  return out


def _certify(key, n: int, method: str, large: int = 500) -> list:
  """Certification (experiments/certify/): smoothing's CERTIFY and SmoothAdv in batches of 50,
  or intervals' PGD and AutoAttack in batches of 250."""
  ck = keys.certify_keys(key)
  out = [_data(list(ck)), _data(keys.example_keys(ck.predict, n))]
  if method == 'smoothing':
    out += [_data(keys.example_keys(ck.certify, n)), _data(keys.example_keys(ck.large, large))]
    for a in range(0, n, 50):
      out += _under_attack(keys.batch_keys(ck.attack, a).attacks, 50)
  else:
    for a in range(0, n, 250):
      out += _under_attack(keys.batch_keys(ck.attack, a).attacks, 250)
      out += _autoattack(keys.batch_keys(ck.autoattack, a).attacks, min(250, n - a), 250)
  return out


def evaluation_keys_drawn(seed: int, n: int, batch: int, certify: str = 'smoothing') -> np.ndarray:
  """Every key of a full evaluation of n images: every part of `EvalKeys` (the suite, whatever
  its kind: listed attacks, the adaptive suite's candidates and estimator; the draws; AutoAttack
  beside it; the grid; the figures; certification; the study's EOT curves; candidates added to
  a finished suite)."""
  root = keys.evaluation_key(seed)
  ek = keys.eval_keys(root)
  out = [_data(root), _data(list(ek))]
  for part in (ek.finite, ek.suite, ek.draws, ek.grid, ek.figures, ek.added):
    out += _part(part, n, batch)
  out += _autoattack(ek.autoattack, n) + _certify(ek.certify, n, certify)
  k_attacks, k_predict, k_scores = jax.random.split(ek.study, 3)  # adaptive.eot_convergence
  out += [_data([k_attacks, k_predict, k_scores])] + _draws(k_predict)
  for s in (1, 2, 4, 8, 16, 32):
    for t in (5, 10, 20, 50, 100, 200):
      out += _under_attack(keys.pair_key(k_attacks, s, t), n)
  return np.concatenate(out)


def _as_rows(a: np.ndarray) -> set:
  return set(map(tuple, a.tolist()))


@pytest.mark.long
def test_no_two_keys_of_a_full_evaluation_are_equal():
  """10 000 images in batches of 500, every part of the evaluation, a superset of every suite's
  attacks and draws: over 200 000 keys, no two equal."""
  for certify in ('smoothing', 'intervals'):
    drawn = evaluation_keys_drawn(0, 10_000, 500, certify)
    assert len(drawn) > 200_000
    assert len(np.unique(drawn, axis=0)) == len(drawn)


def test_no_two_keys_of_a_small_evaluation_are_equal_and_batches_of_one_are_covered():
  """Batches of one example (first indices 0, 1, 2, ...): the indices that once shared a namespace
  with the evaluation's tags (1, 2, 4) now live under their own part's key."""
  for certify in ('smoothing', 'intervals'):
    drawn = evaluation_keys_drawn(3, 12, 1, certify)
    assert len(np.unique(drawn, axis=0)) == len(drawn)


@pytest.mark.long
@pytest.mark.parametrize('suite', ['study', 'autoattack'])
def test_the_evaluator_draws_only_keys_of_the_schedule(monkeypatch, suite):
  """A real evaluation records every key it asks keys.py for; each is one of the schedule's (so
  the uniqueness above is about the keys the code draws, not a copy of them)."""
  from jaxrobust.evaluation import EvalSpec, evaluate_model
  from jaxrobust.models import create_model

  seen = []
  for name in ('eval_keys', 'batch_keys', 'attack_keys', 'draw_key', 'pair_key'):
    real = getattr(keys, name)

    def record(*a, real=real, **k):
      out = real(*a, **k)
      seen.extend(out if isinstance(out, tuple) else [out])
      return out

    monkeypatch.setattr(keys, name, record)
  m = create_model('small_cnn', num_classes=4)
  x = np.asarray(jax.random.randint(jax.random.key(0), (6, 8, 8, 1), 0, 256), np.uint8)
  v = m.init(jax.random.key(1), x[:1] / np.float32(255))
  y = np.asarray(m.apply(v, x / np.float32(255)).argmax(-1))
  spec = EvalSpec(dataset='synthetic', suite=suite, steps_scale=0.02, epsilon_grid=(0.0, 0.1), batch_size=4)
  evaluate_model(m, v, x, y, spec, key=keys.evaluation_key(5))
  monkeypatch.undo()
  concrete = [k for k in seen if not isinstance(k, jax.core.Tracer)]
  assert len(concrete) > 10
  schedule = _as_rows(evaluation_keys_drawn(5, 6, 4))
  missing = [k for k in _as_rows(_data(concrete)) if k not in schedule]
  assert not missing, f'{len(missing)} keys drawn outside the schedule'


def test_a_part_added_last_leaves_the_other_parts_keys_as_they_were():
  """`EvalKeys.added` was split last: the eight parts before it have the keys a split into eight
  gave them, so pieces cached before it stay valid."""
  root = keys.evaluation_key(7)
  before = jax.random.split(root, 8)
  now = keys.eval_keys(root)
  assert now._fields[-1] == 'added' and len(now) == 9
  np.testing.assert_array_equal(_data(list(now)[:8]), _data(before))


# What every evaluation key helper and tag of keys.py draws from one root, hashed, per schedule:
# changing any of them changes the bits of a cached attack, so it needs a new `EVAL_SCHEDULE` (and
# a new line here), or a cache written under the old keys would be read as if drawn under the new.
SCHEDULE_FINGERPRINTS = {
  3: '631644631223efdfec094a112e8cb083c96706fe0ccda5999ad7e2c60e31b436',
}


def schedule_fingerprint() -> str:
  import hashlib

  root = keys.evaluation_key(0)
  batch = keys.batch_keys(keys.eval_keys(root).suite, 500)
  drawn = [
    root,
    *keys.eval_keys(root),
    *batch,
    *keys.attack_keys(batch, 3),
    *keys.certify_keys(root),
    *keys.example_keys(root, 3),
    keys.draw_key(root, 7),
    keys.pair_key(root, 2, 1500),
    keys.step_model_key(root, 11),
    *keys.step_model_keys(root, 11),
    keys.search_step_model_key(root, 2, 11),
  ]
  tags = sorted((name, getattr(keys, name)) for name in dir(keys) if name.startswith('TAG_'))
  h = hashlib.sha256(repr(tags).encode())
  for k in drawn:
    h.update(np.asarray(jax.random.key_data(k)).tobytes())
  return h.hexdigest()


def test_a_changed_key_schedule_has_a_new_number():
  """keys.EVAL_SCHEDULE names what the helpers draw: a cache stores the number, so a change of
  the keys under an unchanged number would let a cache of other draws pass as this schedule's."""
  assert keys.EVAL_SCHEDULE in SCHEDULE_FINGERPRINTS, (
    f'EVAL_SCHEDULE {keys.EVAL_SCHEDULE} has no fingerprint: {schedule_fingerprint()}'
  )
  assert schedule_fingerprint() == SCHEDULE_FINGERPRINTS[keys.EVAL_SCHEDULE], (
    f'the evaluation keys changed: bump keys.EVAL_SCHEDULE and add its fingerprint {schedule_fingerprint()}'
  )
