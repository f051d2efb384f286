"""The key schedule has one owner: no `fold_in` with a literal tag outside jaxrobust/keys.py."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
LITERAL_TAG = re.compile(r'fold_in\([^,()]+,\s*-?\d[\d_*]*\s*\)')


def test_no_literal_fold_in_tag_outside_keys_py():
  found = [
    f'{p.relative_to(ROOT)}:{i}: {line.strip()}'
    for folder in ('jaxrobust', 'experiments')
    for p in sorted((ROOT / folder).rglob('*.py'))
    if p.name != 'keys.py'
    for i, line in enumerate(p.read_text().splitlines(), 1)
    if LITERAL_TAG.search(line)
  ]
  assert not found, 'name these tags in jaxrobust/keys.py:\n' + '\n'.join(found)
  assert LITERAL_TAG.search('jax.random.fold_in(key, 10**6)')  # the pattern itself can match
