"""Every ```python block of the README, and of each page of docs/, runs: in order, in one namespace
per file."""

import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ['README.md'] + sorted(
  os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, 'docs', '*.md'))
)


def _blocks(page):
  return re.findall(r'```python\n(.*?)```', open(os.path.join(ROOT, page)).read(), flags=re.S)


@pytest.mark.long
@pytest.mark.parametrize('page', [p for p in PAGES if _blocks(p)])
def test_examples_run(page):
  ns = {}
  for block in _blocks(page):
    exec(compile(block, page, 'exec'), ns)
  if page == 'README.md':
    assert ns['x_adv'].shape == ns['x'].shape and 0.0 <= ns['result']['test_accuracy'] <= 1.0
  if page == 'docs/evaluation.md':
    assert ns['x_transfer'].shape == ns['x'].shape


def test_the_pages_with_examples_are_found():
  assert {'README.md', 'docs/evaluation.md'} <= {p for p in PAGES if _blocks(p)}


def test_the_readme_is_a_front_page():
  text = open(os.path.join(ROOT, 'README.md')).read()
  assert len(text.splitlines()) < 200
  first = '\n'.join(text.splitlines()[:15])
  assert 'make demo' in first and 'make test' in first
