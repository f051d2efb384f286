"""Published weights: written from a run, read back to the same bits, evaluated with no training;
every folder that cannot be trusted is refused by name and left as it is."""

import hashlib
import io
import json
import os

import jax
import numpy as np
import pytest

from experiments import evaluate
from jaxrobust import train
from jaxrobust.train.weights import PublishedWeightsError, load_weights, publish, published_record
from tests.configs import synthetic_training_config
from tests.conftest import tree_files


@pytest.fixture(scope='module')
def published(tmp_path_factory):
  root = tmp_path_factory.mktemp('pub')
  c = synthetic_training_config()
  c.train.num_steps = 2
  out = train.train_and_evaluate(c, str(root / 'run'), progress=False)
  publish(str(root / 'run'), str(root / 'weights'))
  return root, out


def _resum(folder):
  lines = ''.join(
    f'{hashlib.sha256(open(os.path.join(folder, f), "rb").read()).hexdigest()}  {f}\n'
    for f in ('weights.npz', 'config.json')
  )
  open(os.path.join(folder, 'SHA256SUMS'), 'w').write(lines)


def test_published_weights_load_to_the_same_bits_and_evaluate(published, tmp_path):
  root, out = published
  _, _, variables, ds = load_weights(str(root / 'weights'))
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(out['state'].variables)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  res = evaluate.evaluate_weights(
    str(root / 'weights'), out_dir=str(tmp_path), suite='standard', num_test=16, steps_scale=0.1
  )
  assert 0.0 <= res['clean'] <= 1.0 and 'environment' in json.load(open(tmp_path / 'eval_standard.json'))
  # Two folders of one name write to one default place: the record names the folder it evaluated.
  assert json.load(open(tmp_path / 'eval_standard.json'))['source'] == {'weights': str(root / 'weights')}


def _copy(root, tmp_path):
  import shutil

  dst = tmp_path / 'w'
  shutil.copytree(root / 'weights', dst)
  return dst


def _npz(arrays):
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  return buf.getvalue()


@pytest.mark.parametrize(
  'damage, match',
  [
    ('flip', 'SHA-256'),
    ('no_sums', 'SHA256SUMS: missing'),
    ('nan', 'non-finite'),
    ('shape', 'the model needs'),
    ('missing_array', 'missing'),
    ('pickle', 'not a plain array archive'),
    ('no_folder', 'no such published-weights folder'),
  ],
)
def test_an_untrustworthy_folder_is_refused_by_name(published, tmp_path, damage, match):
  root, _ = published
  w = _copy(root, tmp_path)
  npz = w / 'weights.npz'
  with np.load(npz) as z:
    arrays = {k: z[k] for k in z.files}
  first = sorted(arrays)[0]
  if damage == 'flip':
    b = bytearray(npz.read_bytes())
    b[len(b) // 2] ^= 1
    npz.write_bytes(bytes(b))
  elif damage == 'no_sums':
    os.remove(w / 'SHA256SUMS')
  elif damage == 'no_folder':
    w = w / 'typo'
  else:
    if damage == 'nan':
      arrays[first] = np.full_like(arrays[first], np.nan)
    elif damage == 'shape':
      arrays[first] = np.zeros((3,) + arrays[first].shape, arrays[first].dtype)
    elif damage == 'missing_array':
      del arrays[first]
    elif damage == 'pickle':
      arrays[first] = np.array([{'a': 1}], dtype=object)
    npz.write_bytes(_npz(arrays))
    _resum(w)  # a consistent folder: only the content is wrong
  before = tree_files(w)
  with pytest.raises(PublishedWeightsError, match=match):
    load_weights(str(w))
  assert tree_files(w) == before


@pytest.fixture(scope='module')
def published_row(tmp_path_factory):
  """A study row's published weights: the synthetic 'regular' defense, two steps."""
  from jaxrobust.configs.defenses import defense_config

  root = tmp_path_factory.mktemp('row')
  c = defense_config('regular', 'synthetic')
  c.train.num_steps = 2
  out = train.train_and_evaluate(c, str(root / 'run'), progress=False)
  publish(str(root / 'run'), str(root / 'published'))
  return root, out


def test_a_study_row_with_published_weights_is_evaluated_from_them_without_training(published_row, tmp_path):
  from experiments import rows

  root, out = published_row
  seen = {}

  def evaluate_(t):
    seen['t'] = t
    return {}

  rows.study_row(
    'regular',
    'synthetic',
    out_dir=str(tmp_path / 'out'),
    runs_dir=str(tmp_path / 'runs'),
    published=str(root / 'published'),
    evaluate=evaluate_,
    progress=False,
  )
  assert not os.path.exists(tmp_path / 'runs')  # nothing trained
  t = seen['t']
  assert t.steps == out['steps'] and t.test_accuracy == pytest.approx(out['test_accuracy'])
  for a, b in zip(jax.tree.leaves(t.variables), jax.tree.leaves(out['state'].variables)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize(
  'row, epochs, match',
  [('pgd_at', None, "train.objective: 'clean' -> 'pgd_at'"), ('regular', 3.0, 'num_epochs')],
)
def test_published_weights_of_another_config_are_refused_for_a_row(
  published_row, tmp_path, row, epochs, match
):
  from experiments import rows

  root, _ = published_row
  with pytest.raises(ValueError, match=match):
    rows.study_row(
      row,
      'synthetic',
      out_dir=str(tmp_path / 'out'),
      runs_dir=str(tmp_path / 'runs'),
      published=str(root / 'published'),
      evaluate=lambda t: {},
      epochs=epochs,
      progress=False,
    )
  assert not os.path.exists(tmp_path / 'out')


def test_load_model_reads_a_published_folder_and_a_run_alike(published):
  from jaxrobust.train.weights import load_model

  root, _ = published
  a, b = load_model(str(root / 'weights'))[2], load_model(str(root / 'run'))[2]
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
  with pytest.raises(Exception, match='nowhere'):
    load_model(str(root / 'nowhere'))


def test_a_damaged_final_checkpoint_is_not_published_under_the_final_record(tmp_path):
  """The final step damaged: publish refuses (writing nothing) unless allowed an older step, and
  then record.json names the step it published and that step's own test row (none here)."""
  import glob

  c = synthetic_training_config()  # checkpoints at steps 4 and 8; the test row at step 8
  train.train_and_evaluate(c, str(tmp_path / 'run'), progress=False)
  largest = max(
    (p for p in glob.glob(str(tmp_path / 'run' / 'checkpoints' / '8' / '**' / '*'), recursive=True)),
    key=lambda p: os.path.getsize(p) if os.path.isfile(p) and 'meta' not in p else -1,
  )
  data = bytearray(open(largest, 'rb').read())
  data[len(data) // 3 : len(data) // 3 + 16] = bytes(
    b ^ 0xFF for b in data[len(data) // 3 : len(data) // 3 + 16]
  )
  open(largest, 'wb').write(bytes(data))
  with pytest.warns(UserWarning, match='skipping damaged checkpoint step 8'):
    with pytest.raises(
      PublishedWeightsError, match=r'final checkpoint \(step 8.*newest intact one is step 4'
    ):
      publish(str(tmp_path / 'run'), str(tmp_path / 'pub'))
  assert not os.path.exists(tmp_path / 'pub')
  publish(str(tmp_path / 'run'), str(tmp_path / 'pub'), allow_older=True)
  record = json.load(open(tmp_path / 'pub' / 'record.json'))
  assert record['step'] == 4 and record['final'] is None
  with pytest.raises(PublishedWeightsError, match='names no test row'):
    published_record(str(tmp_path / 'pub'))


def test_record_json_is_covered_by_the_checksums_and_read_only_when_it_matches(published, tmp_path):
  root, out = published
  final = published_record(str(root / 'weights'))
  assert final['test_accuracy'] == pytest.approx(out['test_accuracy']) and final['step'] == 2
  w = _copy(root, tmp_path)
  record = json.load(open(w / 'record.json'))
  record['final']['test_accuracy'] = 0.999
  json.dump(record, open(w / 'record.json', 'w'))
  with pytest.raises(PublishedWeightsError, match='record.json: its SHA-256 is not the one'):
    published_record(str(w))
  _resum(w)  # the weights' checksums alone: record.json is no longer covered
  with pytest.raises(PublishedWeightsError, match='record.json: not covered by'):
    published_record(str(w))
  load_weights(str(w))  # the weights themselves still load


def test_publish_does_not_replace_a_folder_unless_forced(published):
  root, _ = published
  before = tree_files(root / 'weights')
  with pytest.raises(FileExistsError, match='already holds weights.npz.*force'):
    publish(str(root / 'run'), str(root / 'weights'))
  assert tree_files(root / 'weights') == before
  publish(str(root / 'run'), str(root / 'weights'), force=True)
  load_weights(str(root / 'weights'))


def test_sha256sum_listings_in_binary_mode_or_upper_case_are_accepted(published, tmp_path):
  root, _ = published
  w = _copy(root, tmp_path)
  sums = open(w / 'SHA256SUMS').read().splitlines()
  open(w / 'SHA256SUMS', 'w').write(
    ''.join(f'{h.upper()} *{name}\n' for h, name in (line.split() for line in sums))
  )
  load_weights(str(w))
  published_record(str(w))


@pytest.mark.parametrize(
  'content, match', [(b'', 'not a plain array archive'), ('npy', 'a single array, not an archive')]
)
def test_a_weights_file_that_is_empty_or_a_single_array_is_refused_by_name(
  published, tmp_path, content, match
):
  root, _ = published
  w = _copy(root, tmp_path)
  if content == 'npy':
    buf = io.BytesIO()
    np.save(buf, np.zeros(3, np.float32))
    content = buf.getvalue()
  (w / 'weights.npz').write_bytes(content)
  _resum(w)
  with pytest.raises(PublishedWeightsError, match=match):
    load_weights(str(w))
