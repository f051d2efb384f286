"""The key schedule has one owner: no `fold_in` with a literal tag outside jaxrobust/keys.py."""

import pathlib
import re
import jax
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LITERAL_TAG = re.compile(r'fold_in\([^,()]+,\s*-?\d[\d_*]*\s*\)')
# A tag computed from indices (`1000 * j + s`, `2 * i + 1`): named helpers in keys.py instead.
ARITHMETIC_TAG = re.compile(r'fold_in\([^,()]+,[^()]*[*+][^()]*\)')


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
  assert not ARITHMETIC_TAG.search('jax.random.fold_in(key, keys.TAG_EVAL_CLEAN)')


def test_pair_keys_keep_the_historical_schedule_and_never_collide():
  """Below the stride a pair's key is the one committed results were drawn with; beyond it (the
  AutoAttack chunk start that once reached 1000: 1000·1 + 1000 = 1000·2 + 0) every pair differs."""
  from jaxrobust import keys

  root = jax.random.key(0)
  bits = lambda k: tuple(np.asarray(jax.random.key_data(k)).tolist())  # noqa: E731
  assert bits(keys.pair_key(root, 2, 7, stride=1000)) == bits(jax.random.fold_in(root, 2007))
  # A full evaluation's worth: 10 000 points in chunks of 500, attacks 1..6.
  drawn = [bits(keys.pair_key(root, j, s, stride=1000)) for j in range(1, 7) for s in range(0, 10_000, 500)]
  assert len(set(drawn)) == len(drawn)
  a, b = keys.suite_attack_keys(root, 3)
  assert bits(a) == bits(jax.random.fold_in(root, 6)) and bits(b) == bits(jax.random.fold_in(root, 7))
  with pytest.raises(ValueError, match='indices must be >= 0'):
    keys.pair_key(root, -1, 0, stride=1000)
