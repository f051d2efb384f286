"""The package's layering: the attack and certification libraries never import models or
training, and the library never imports the study's reporting (matplotlib)."""

import subprocess
import sys

import pytest


def _imported_after(module: str) -> set[str]:
  code = f'import sys, {module}; print("\\n".join(sorted(sys.modules)))'
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
  return set(out.split())


@pytest.mark.long
@pytest.mark.parametrize('leaf', ['jaxrobust.attacks', 'jaxrobust.certify'])
def test_attack_and_certify_libraries_import_no_model_or_training(leaf):
  loaded = _imported_after(leaf)
  bad = sorted(m for m in loaded if m.startswith(('jaxrobust.models', 'jaxrobust.train', 'experiments')))
  assert not bad, f'{leaf} imports {bad}'


@pytest.mark.long
@pytest.mark.parametrize('package', ['jaxrobust.train', 'jaxrobust.evaluation', 'jaxrobust.models'])
def test_the_library_does_not_import_matplotlib_or_the_study(package):
  loaded = _imported_after(package)
  bad = sorted(m for m in loaded if m.split('.')[0] in ('matplotlib', 'experiments'))
  assert not bad, f'{package} imports {bad[:5]}'
