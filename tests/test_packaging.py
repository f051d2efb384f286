"""The wheel users install: the library alone (no `experiments`), its type marker and license, and
metadata whose dependencies cover every third-party module the library imports."""

import ast
import pathlib
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Imported lazily by optional features, each named in the docs: TensorFlow for tfds preparation
# (the `tf` extra), Equinox for `adapters.from_equinox` (the user's own library).
OPTIONAL = {'tensorflow', 'equinox'}
DISTRIBUTION = {
  'flax': 'flax', 'jax': 'jax', 'jaxlib': 'jaxlib', 'ml_collections': 'ml-collections',
  'ml_dtypes': 'ml-dtypes', 'numpy': 'numpy', 'optax': 'optax', 'orbax': 'orbax-checkpoint',
  'scipy': 'scipy', 'tensorflow_datasets': 'tensorflow-datasets', 'tqdm': 'tqdm', 'chex': 'chex',
  'matplotlib': 'matplotlib', 'absl': 'absl-py',
}  # fmt: skip


def _third_party_imports() -> set[str]:
  names = set()
  for path in (ROOT / 'jaxrobust').rglob('*.py'):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        names |= {a.name.split('.')[0] for a in node.names}
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names.add(node.module.split('.')[0])
  return {n for n in names if n not in sys.stdlib_module_names and n not in ('jaxrobust', '__future__')}


def test_every_third_party_import_of_the_library_is_a_declared_dependency():
  import tomllib

  from packaging.requirements import Requirement

  declared = {
    Requirement(d).name
    for d in tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['dependencies']
  }
  missing = sorted(n for n in _third_party_imports() - OPTIONAL if DISTRIBUTION.get(n, n) not in declared)
  assert not missing, f'imported by jaxrobust but not declared in [project.dependencies]: {missing}'


@pytest.mark.long
def test_the_wheel_holds_the_library_only(tmp_path):
  subprocess.run(
    [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-q', '-w', str(tmp_path), str(ROOT)],
    check=True,
    capture_output=True,
  )
  (wheel,) = tmp_path.glob('jaxrobust-*.whl')
  names = zipfile.ZipFile(wheel).namelist()
  tops = {n.split('/')[0] for n in names if not n.split('/')[0].endswith('.dist-info')}
  assert tops == {'jaxrobust'}, tops
  assert 'jaxrobust/py.typed' in names
  assert any(n.endswith('licenses/LICENSE') for n in names), [n for n in names if 'dist-info' in n]


def test_every_defense_config_is_library_api():
  from jaxrobust import configs
  from jaxrobust.train import build_experiment

  assert {'regular', 'pgd_at', 'lwta', 'noise_injection'} <= set(configs.names())
  for name in configs.names():
    for dataset in ('fashion_mnist', 'cifar10', 'synthetic'):
      c = configs.get(name, dataset)
      assert c.data.name == dataset and c.model.name
  build_experiment(configs.get('pgd_at', 'synthetic'))  # builds as it is
  with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
    configs.get('pgd_at', 'mnist')
  with pytest.raises(ValueError, match="unknown defense 'pgd'"):
    configs.get('pgd', 'cifar10')
