"""Every ```python block of the README's attack section runs, in order, in one namespace."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_examples_run():
  text = open(os.path.join(ROOT, 'README.md')).read()
  blocks = re.findall(r'```python\n(.*?)```', text, flags=re.S)
  assert len(blocks) >= 6
  ns = {}
  for block in blocks:
    exec(compile(block, 'README.md', 'exec'), ns)
  assert ns['x_transfer'].shape == ns['x'].shape
