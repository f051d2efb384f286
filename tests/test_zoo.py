"""Published checkpoints: our torch-free readers and converters against logits that torch computed
(tests/data/zoo, written by tests/fixtures/zoo_fixtures.py), malicious pickles, wrong architectures."""

import io
import os
import pickle
import struct
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.fixtures.zoo_fixtures import SPECS  # file → (arch, overrides): the fixtures' tiny networks
from jaxrobust.models import make_logits_fn
from jaxrobust.models.zoo import (
  ArchitectureMismatchError,
  CheckpointFormatError,
  UnsafeCheckpointError,
  load_published,
  read_checkpoint,
  read_safetensors,
)

ZOO = os.path.join(os.path.dirname(__file__), 'data', 'zoo')


@pytest.fixture(scope='module')
def expected():
  return np.load(os.path.join(ZOO, 'expected.npz'))


def _logits(path, arch, **kw):
  model, variables = load_published(path, arch, 'cifar10', **kw)
  x = np.load(os.path.join(ZOO, 'expected.npz'))['inputs']
  return np.asarray(jax.jit(make_logits_fn(model, variables))(jnp.asarray(x), jax.random.key(0)))


@pytest.mark.parametrize('name', sorted(SPECS))
def test_fixture_logits_match_torch(name, expected):
  arch, kw = SPECS[name]
  got = _logits(os.path.join(ZOO, name), arch, **kw)
  np.testing.assert_allclose(got, expected[name], atol=1e-4, rtol=0)
  assert np.abs(expected[name]).max() > 0.1  # the logits are not trivially zero


def test_padding_convention_matters(expected):
  """DeepMind's 'SAME' padding read as torch's (1, 1) shifts every stride-2 output: the logits
  move more than 10× the 1e-4 tolerance, so the fixture test above catches a wrong convention."""
  arch, kw = SPECS['dm_wrn.pt']
  wrong = _logits(os.path.join(ZOO, 'dm_wrn.pt'), arch, padding='torch', **kw)
  assert np.abs(wrong - expected['dm_wrn.pt']).max() > 1e-3


def test_batchnorm_statistics_are_used(expected):
  """Random running statistics in the fixtures: resetting them changes the logits."""
  from jaxrobust.models.zoo import convert

  arch, kw = SPECS['rb_wrn.pt']
  fmt, arrays = read_checkpoint(os.path.join(ZOO, 'rb_wrn.pt'))
  arrays = {k: (np.zeros_like(v) if k.endswith('running_mean') else v) for k, v in arrays.items()}
  model, variables = convert(arch, fmt, arrays, 'cifar10', **kw)
  x = jnp.asarray(expected['inputs'])
  got = np.asarray(make_logits_fn(model, variables)(x, jax.random.key(0)))
  assert np.abs(got - expected['rb_wrn.pt']).max() > 1e-3


def test_wrong_depth_names_missing_keys():
  with pytest.raises(ArchitectureMismatchError, match=r'missing keys, first: \[.block1\.layer\.1\.'):
    load_published(os.path.join(ZOO, 'rb_wrn.pt'), 'wrn28_10', 'cifar10', depth=16, widen=1, base_width=4)


def test_wrong_width_names_shapes():
  with pytest.raises(ArchitectureMismatchError, match=r'wrong shapes, first: \[.conv1\.weight'):
    load_published(os.path.join(ZOO, 'rb_wrn.pt'), 'wrn28_10', 'cifar10', depth=10, widen=1, base_width=8)


def test_shallower_arch_names_unexpected_keys():
  with pytest.raises(ArchitectureMismatchError, match='unexpected keys'):
    load_published(
      os.path.join(ZOO, 'preact_resnet.pt'),
      'preact_resnet18',
      'cifar10',
      stage_blocks=(1, 1, 1, 0),
      widths=(4, 8, 8, 16),
    )


def test_wrong_family_is_named():
  with pytest.raises(ArchitectureMismatchError, match='wrn network, but the checkpoint holds a resnet'):
    load_published(os.path.join(ZOO, 'resnet.safetensors'), 'wrn28_10', 'cifar10')


def test_unknown_arch_and_dataset():
  with pytest.raises(ValueError, match="unknown arch 'vit'"):
    load_published(os.path.join(ZOO, 'rb_wrn.pt'), 'vit', 'cifar10')
  with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
    load_published(os.path.join(ZOO, 'rb_wrn.pt'), 'wrn28_10', 'imagenet')


# ---- malicious and damaged files ----
class _Payload:
  """Pickles as a call of os.system: what a malicious checkpoint does."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f'touch {self.marker}',))


def _zip_checkpoint(path, payload_pickle: bytes):
  with zipfile.ZipFile(path, 'w') as z:
    z.writestr('archive/data.pkl', payload_pickle)
    z.writestr('archive/byteorder', 'little')
    z.writestr('archive/version', '3\n')


def _legacy_checkpoint(path, payload_pickle: bytes):
  with open(path, 'wb') as f:
    for header in (0x1950A86A20F9469CFC6C, 1001, {'little_endian': True}):
      pickle.dump(header, f, protocol=2)
    f.write(payload_pickle)


def _npy_checkpoint(path, payload_pickle: bytes):
  with open(path, 'wb') as f:
    np.lib.format.write_array_header_1_0(f, {'descr': '|O', 'fortran_order': False, 'shape': (2,)})
    f.write(payload_pickle)


@pytest.mark.parametrize(
  'writer, ext', [(_zip_checkpoint, '.pt'), (_legacy_checkpoint, '.pth'), (_npy_checkpoint, '.npy')]
)
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, writer, ext):
  marker = tmp_path / 'pwned'
  state = {'conv1.weight': _Payload(marker)}
  path = str(tmp_path / f'evil{ext}')
  writer(path, pickle.dumps(state, protocol=2))
  pickle.loads(pickle.dumps(_Payload(tmp_path / 'control'), protocol=2))  # a plain load does run it
  assert (tmp_path / 'control').exists()
  with pytest.raises(UnsafeCheckpointError, match=r'refusing to load global (posix|os|nt)\.system'):
    read_checkpoint(path)
  assert not marker.exists()


def test_builtins_eval_is_refused(tmp_path):
  path = str(tmp_path / 'evil.pt')
  # GLOBAL builtins.eval, then call it: the opcodes a hand-made checkpoint would use.
  _zip_checkpoint(path, b'\x80\x02cbuiltins\neval\nq\x00X\x06\x00\x00\x001 + 1q\x01\x85q\x02Rq\x03.')
  with pytest.raises(UnsafeCheckpointError, match=r'builtins\.eval'):
    read_checkpoint(path)


def test_tensor_outside_its_storage_is_refused(tmp_path):
  """An allowed rebuild function called with a stride that reaches past the storage."""
  path = str(tmp_path / 'bad.pt')
  pkl = (
    b'\x80\x02}q\x00X\x01\x00\x00\x00wq\x01ctorch._utils\n_rebuild_tensor_v2\nq\x02'
    b'((X\x07\x00\x00\x00storageq\x03ctorch\nFloatStorage\nq\x04X\x01\x00\x00\x000q\x05X\x03\x00\x00\x00cpuq\x06K\x04tq\x07Q'
    b'K\x00K\x04K\x04\x86q\x08K\x04K\x01\x86q\tI00\n)tq\nRq\x0bs.'
  )
  _zip_checkpoint(path, pkl)
  with zipfile.ZipFile(path, 'a') as z:
    z.writestr('archive/data/0', np.arange(4, dtype=np.float32).tobytes())
  with pytest.raises(CheckpointFormatError, match='reaches past its storage'):
    read_checkpoint(path)


def test_safetensors_header_is_checked(tmp_path):
  path = str(tmp_path / 'bad.safetensors')
  header = b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 32]}}'
  with open(path, 'wb') as f:
    f.write(struct.pack('<Q', len(header)) + header + b'\x00' * 16)
  with pytest.raises(CheckpointFormatError, match="tensor 'w' has offsets 0..32"):
    read_safetensors(path)
  with open(path, 'wb') as f:
    f.write(struct.pack('<Q', 10**6) + b'{}')
  with pytest.raises(CheckpointFormatError, match='header length'):
    read_safetensors(path)


@pytest.mark.parametrize(
  'entry,match',
  [
    ('[1, 2]', "tensor 'w' is described by"),
    ('7', "tensor 'w' is described by"),
    ('{"dtype": "F32", "shape": [4]}', 'data_offsets None, not two integers'),
    ('{"dtype": "F32", "shape": [4], "data_offsets": ["0", "16"]}', 'not two integers'),
    ('{"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}', r'shape \[-4\], not integers >= 0'),
    ('{"dtype": "F32", "shape": [1000000, 1000000], "data_offsets": [0, 16]}', 'do not fit its shape'),
    ('{"dtype": "F32", "shape": "4", "data_offsets": [0, 16]}', 'not integers >= 0'),
  ],
)
def test_malformed_safetensors_entries_are_named_format_errors(tmp_path, entry, match):
  """List or int entries, missing or string offsets, negative or overflowing shapes: each a
  CheckpointFormatError naming the file, never a raw TypeError or an attempted allocation."""
  path = tmp_path / 'bad.safetensors'
  header = ('{"w": ' + entry + '}').encode()
  path.write_bytes(struct.pack('<Q', len(header)) + header + b'\x00' * 16)
  with pytest.raises(CheckpointFormatError, match=match) as e:
    read_safetensors(str(path))
  assert str(path) in str(e.value)


def test_unknown_extension_and_missing_file(tmp_path):
  with pytest.raises(CheckpointFormatError, match="unknown checkpoint extension '.h5'"):
    read_checkpoint(str(tmp_path / 'm.h5'))
  with pytest.raises(FileNotFoundError, match='does not exist'):
    read_checkpoint(str(tmp_path / 'm.pt'))


def test_not_a_checkpoint(tmp_path):
  path = tmp_path / 'noise.pt'
  path.write_bytes(io.BytesIO(b'\x00garbage' * 10).getvalue())
  with pytest.raises(CheckpointFormatError):
    read_checkpoint(str(path))


@pytest.mark.parametrize('name', ['rb_wrn.pt', 'preact_resnet.pt', 'dm_wrn_haiku.npy'])
def test_truncated_file_is_a_format_error(tmp_path, name):
  blob = open(os.path.join(ZOO, name), 'rb').read()
  path = tmp_path / name
  path.write_bytes(blob[: len(blob) // 2])
  with pytest.raises(CheckpointFormatError, match=name):
    read_checkpoint(str(path))


def test_evaluate_published_writes_its_result(tmp_path, expected):
  """The one-command path on a fixture: clean accuracy equals the torch logits' accuracy."""
  from experiments.evaluate import evaluate_published
  from jaxrobust.data import Dataset

  x = (expected['inputs'] * 255).round().astype(np.uint8)
  labels = np.array([0, 1, 2, 3], np.int32)
  ds = Dataset('cifar10', 10, (32, 32, 3), x, labels, x, labels, ())
  arch, kw = SPECS['rb_wrn.pt']
  res = evaluate_published(
    os.path.join(ZOO, 'rb_wrn.pt'),
    arch=arch,
    dataset='cifar10',
    suite='study',
    num_test=4,
    out_dir=str(tmp_path),
    ds=ds,
    steps_scale=0.01,
    model_overrides=kw,
  )
  model, variables = load_published(os.path.join(ZOO, 'rb_wrn.pt'), arch, 'cifar10', **kw)
  pred = np.asarray(
    make_logits_fn(model, variables)(jnp.asarray(x / 255.0, jnp.float32), jax.random.key(0))
  ).argmax(1)
  assert res['clean'] == pytest.approx(float(np.mean(pred == labels)))
  assert (tmp_path / 'eval_study.json').exists()


def _binunicode(s: str) -> bytes:
  return b'X' + struct.pack('<I', len(s)) + s.encode()


@pytest.mark.parametrize(
  'target,state',
  [
    # BUILD rewrites the FloatStorage stand-in's dtype (uint8: logits off by 1e36 afterwards) ...
    (b'ctorch\nFloatStorage\n', b'}' + _binunicode('dtype') + _binunicode('|u1') + b's'),
    # ... or, through slot state, an allowed function's defaults.
    (
      b'ctorch._utils\n_rebuild_tensor_v2\n',
      b'N}' + _binunicode('__defaults__') + b')s\x86',
    ),
  ],
  ids=['storage_dtype', 'function_defaults'],
)
def test_a_refused_file_leaves_the_reader_as_it_was(tmp_path, target, state, expected):
  """A pickle that BUILDs onto an allow-listed stand-in, then names os.system, is refused, and a
  legitimate checkpoint read afterwards in the same process still gives torch's logits."""
  from jaxrobust.models.zoo import readers

  poison = b'\x80\x02' + target + state + b'b' + b'cos\nsystem\n' + b'.'
  with pytest.raises(UnsafeCheckpointError, match=r'poison\.pkl: refusing to set the state'):
    readers.SafeUnpickler(io.BytesIO(poison), None, 'poison.pkl').load()
  assert readers._ALLOWED[('torch', 'FloatStorage')].dtype == np.float32
  arch, kw = SPECS['rb_wrn.pt']
  got = _logits(os.path.join(ZOO, 'rb_wrn.pt'), arch, **kw)
  np.testing.assert_allclose(got, expected['rb_wrn.pt'], atol=1e-4, rtol=0)


def test_a_published_model_with_one_nan_weight_is_refused_by_name(tmp_path):
  """Under jit the NaN vanished through ReLU's and max-pool's max: finite constant logits, 0 %
  everywhere, and the model called 'stochastic'. The parameters themselves are checked."""
  import json

  src = os.path.join(ZOO, 'resnet.safetensors')
  data = bytearray(open(src, 'rb').read())
  n = struct.unpack('<Q', bytes(data[:8]))[0]
  header = json.loads(bytes(data[8 : 8 + n]))
  name = next(k for k, v in header.items() if k != '__metadata__' and v['dtype'] == 'F32' and 'conv' in k)
  start = 8 + n + header[name]['data_offsets'][0]
  data[start : start + 4] = struct.pack('<f', float('nan'))
  path = tmp_path / 'nan.safetensors'
  path.write_bytes(bytes(data))
  arch, kw = SPECS['resnet.safetensors']
  with pytest.raises(
    CheckpointFormatError, match=r'nan.safetensors: non-finite values in 1 arrays.*\(1 values\)'
  ):
    load_published(str(path), arch, 'cifar10', **kw)
  load_published(src, arch, 'cifar10', **kw)  # the intact file still loads


def _torch_pickle(monkeypatch, size, stride, numel) -> bytes:
  """A state dict {'w': tensor} pickled as torch does (persistent storage id, `_rebuild_tensor_v2`),
  written without torch: stand-in modules named torch and torch._utils exist only while pickling."""
  import collections
  import sys
  import types

  torch, utils = types.ModuleType('torch'), types.ModuleType('torch._utils')
  storage_type = type('FloatStorage', (), {'__module__': 'torch'})
  torch.FloatStorage = storage_type

  def _rebuild_tensor_v2(*args):
    return args

  _rebuild_tensor_v2.__module__ = 'torch._utils'
  _rebuild_tensor_v2.__qualname__ = '_rebuild_tensor_v2'
  utils._rebuild_tensor_v2 = _rebuild_tensor_v2
  torch._utils = utils
  monkeypatch.setitem(sys.modules, 'torch', torch)
  monkeypatch.setitem(sys.modules, 'torch._utils', utils)
  storage = object()

  class Tensor:
    def __reduce__(self):
      return (_rebuild_tensor_v2, (storage, 0, size, stride, False, collections.OrderedDict()))

  class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
      return ('storage', storage_type, '0', 'cpu', numel) if obj is storage else None

  buf = io.BytesIO()
  Pickler(buf, protocol=2).dump({'w': Tensor()})
  return buf.getvalue()


def test_a_tiny_file_cannot_ask_for_a_huge_allocation(tmp_path, monkeypatch):
  """A 1 KB .pt with a stride-0 tensor of 10¹² elements, or a legacy storage of 10¹² elements,
  asked for terabytes; both are refused, naming the file, before anything is allocated."""
  path = tmp_path / 'expanded.pt'
  with zipfile.ZipFile(path, 'w') as z:
    z.writestr('archive/data.pkl', _torch_pickle(monkeypatch, (10**6, 10**6), (0, 0), 1))
    z.writestr('archive/data/0', struct.pack('<f', 1.0))
    z.writestr('archive/byteorder', 'little')
    z.writestr('archive/version', '3\n')
  with pytest.raises(CheckpointFormatError, match=r'expanded.pt: a tensor of size \(1000000, 1000000\)'):
    read_checkpoint(str(path))
  legacy = tmp_path / 'huge.pth'
  _legacy_checkpoint(str(legacy), _torch_pickle(monkeypatch, (10**12,), (1,), 10**12))
  with pytest.raises(CheckpointFormatError, match=r'huge.pth: storage 0 claims 1000000000000 elements'):
    read_checkpoint(str(legacy))
  # the same writer, honest sizes: read as it is
  ok = tmp_path / 'ok.pt'
  with zipfile.ZipFile(ok, 'w') as z:
    z.writestr('archive/data.pkl', _torch_pickle(monkeypatch, (2,), (1,), 2))
    z.writestr('archive/data/0', struct.pack('<2f', 1.0, 2.0))
    z.writestr('archive/byteorder', 'little')
    z.writestr('archive/version', '3\n')
  assert read_checkpoint(str(ok))[1]['w'].tolist() == [1.0, 2.0]
