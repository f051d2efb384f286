"""Read published checkpoints as `{name: numpy array}` without torch and without running their code.

A PyTorch `.pt`/`.pth` file is a pickle (in a zip archive since torch 1.6, a bare stream of pickles
before) whose tensors point at raw storages. A pickle can call any importable function, so a
checkpoint is untrusted input: `torch.load` (before `weights_only`) and `pickle.load` would run
whatever the file names. `SafeUnpickler` resolves only the globals listed in `_ALLOWED`, each to a
stand-in written here that builds numpy arrays or plain containers; any other global is refused
before anything is called. DeepMind's JAX checkpoints are `.npy` files holding a pickled
`(params, state)` pair of Haiku dicts; they go through the same unpickler. `.safetensors` files hold
no code at all: a JSON header and raw bytes.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import math
import os
import pickle
import struct
import zipfile
from typing import Any, Callable

import ml_dtypes
import numpy as np


class UnsafeCheckpointError(ValueError):
  """The file asks the unpickler for a global outside the allow-list (it could run code)."""


class CheckpointFormatError(ValueError):
  """The file is not a checkpoint this reader understands (named, with the reason)."""


# torch storage classes → the numpy dtype of their elements.
_STORAGE_DTYPES = {
  'FloatStorage': np.float32,
  'DoubleStorage': np.float64,
  'HalfStorage': np.float16,
  'BFloat16Storage': ml_dtypes.bfloat16,
  'LongStorage': np.int64,
  'IntStorage': np.int32,
  'ShortStorage': np.int16,
  'CharStorage': np.int8,
  'ByteStorage': np.uint8,
  'BoolStorage': np.bool_,
}


class _Immutable:
  """A stand-in that a pickle cannot change. The BUILD opcode sets the state of whatever object
  sits on the stack, the allow-listed stand-ins included, and a refused file could otherwise leave
  a rewritten stand-in behind for every later read in the process."""

  __slots__ = ()

  def __setattr__(self, name, value):
    raise UnsafeCheckpointError(f'refusing to change {self!r}: a checkpoint may not modify the reader')

  def __delattr__(self, name):
    raise UnsafeCheckpointError(f'refusing to change {self!r}: a checkpoint may not modify the reader')

  def __setstate__(self, state):
    raise UnsafeCheckpointError(
      f'refusing to set the state of {self!r}: a checkpoint may not modify the reader'
    )


class _StorageType(_Immutable):
  """Stands in for `torch.FloatStorage` & co.: only its element dtype is ever used."""

  __slots__ = ('name', 'dtype')

  def __init__(self, name: str):
    object.__setattr__(self, 'name', name)
    object.__setattr__(self, 'dtype', np.dtype(_STORAGE_DTYPES[name]))

  def __repr__(self):
    return f'torch.{self.name} stand-in'


class _Function(_Immutable):
  """An allow-listed function, callable by the pickle but not open to BUILD (which could set a
  plain function's `__defaults__`)."""

  __slots__ = ('fn',)

  def __init__(self, fn):
    object.__setattr__(self, 'fn', fn)

  def __call__(self, *args):
    return self.fn(*args)

  def __repr__(self):
    return f'{self.fn.__name__} stand-in'


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
  """`torch._utils._rebuild_tensor_v2`'s job on a numpy storage: a strided view, copied out."""
  size, stride = tuple(size), tuple(stride)
  if storage_offset < 0 or any(n < 0 for n in size) or any(s < 0 for s in stride) or len(size) != len(stride):
    raise CheckpointFormatError(f'a tensor with offset {storage_offset}, size {size}, stride {stride}')
  if not size:
    return np.array(storage[storage_offset])
  needed = storage_offset + 1 + sum((n - 1) * s for n, s in zip(size, stride) if n > 0)
  if min(size) > 0 and needed > storage.size:
    raise CheckpointFormatError(
      f'a tensor of size {size} and stride {stride} reaches past its storage of {storage.size}'
    )
  if math.prod(size) > storage.size:
    # More elements than the storage holds: a stride-0 (expanded) view, which a state dict never
    # needs and which would be copied out to its full size.
    raise CheckpointFormatError(
      f'a tensor of size {size} (stride {stride}) has more elements than its storage of {storage.size}'
    )
  item = storage.itemsize
  view = np.lib.stride_tricks.as_strided(
    storage[storage_offset:], shape=size, strides=[s * item for s in stride], writeable=False
  )
  return np.array(view)


def _rebuild_parameter(data, *_ignored):
  """`torch._utils._rebuild_parameter`: an nn.Parameter is just its tensor here."""
  return data


def _ordered_dict(*args):
  return collections.OrderedDict(*args)


def _numpy_reconstruct(subtype, shape, dtype_code):
  """numpy's `_reconstruct(ndarray, shape, b'b')`: an empty array that BUILD then fills."""
  if subtype is not np.ndarray:
    raise UnsafeCheckpointError(f'refusing to reconstruct an array of type {subtype!r}')
  return np.ndarray.__new__(np.ndarray, shape, dtype_code)


# Every global a state dict or a Haiku .npy checkpoint needs, mapped to a harmless stand-in.
# Functions and storage types are immutable stand-ins; numpy's types refuse attribute changes.
_ALLOWED: dict[tuple[str, str], Any] = {
  ('collections', 'OrderedDict'): _Function(_ordered_dict),
  ('torch._utils', '_rebuild_tensor_v2'): _Function(_rebuild_tensor),
  ('torch._utils', '_rebuild_tensor'): _Function(_rebuild_tensor),
  ('torch._utils', '_rebuild_parameter'): _Function(_rebuild_parameter),
  **{('torch', name): _StorageType(name) for name in _STORAGE_DTYPES},
  # numpy arrays pickle through these (numpy < 2 and numpy >= 2 module names).
  ('numpy.core.multiarray', '_reconstruct'): _Function(_numpy_reconstruct),
  ('numpy._core.multiarray', '_reconstruct'): _Function(_numpy_reconstruct),
  ('numpy', 'ndarray'): np.ndarray,
  ('numpy', 'dtype'): np.dtype,
}


class SafeUnpickler(pickle.Unpickler):
  """An unpickler that resolves only allow-listed globals, to stand-ins that run no file code.

  Args:
    file: the pickle stream.
    load_storage: `(storage_type, key, numel) -> numpy 1-D array` for torch's persistent ids, or
      None when the stream must hold no storages (Haiku .npy).
    source: the file name, for error messages.
  """

  def __init__(self, file, load_storage: Callable | None, source: str):
    super().__init__(file)
    self._load_storage, self._source = load_storage, source
    self._storages: dict[str, Any] = {}

  def load(self):
    try:
      return super().load()
    except (UnsafeCheckpointError, CheckpointFormatError) as e:
      if str(e).startswith(f'{self._source}:'):
        raise
      raise type(e)(f'{self._source}: {e}') from None

  def find_class(self, module, name):
    if (module, name) not in _ALLOWED:
      raise UnsafeCheckpointError(
        f'{self._source}: refusing to load global {module}.{name}; a checkpoint may only hold '
        'tensors, arrays and plain containers (nothing from it was run)'
      )
    return _ALLOWED[(module, name)]

  def persistent_load(self, pid):
    if self._load_storage is None or not (isinstance(pid, tuple) and pid and pid[0] == 'storage'):
      raise CheckpointFormatError(f'{self._source}: unexpected persistent id {pid!r}')
    storage_type, key, _location, numel = pid[1:5]
    if not isinstance(storage_type, _StorageType):
      raise CheckpointFormatError(f'{self._source}: storage of unknown type {storage_type!r}')
    if key not in self._storages:
      self._storages[key] = self._load_storage(storage_type, str(key), int(numel))
    storage = self._storages[key]
    if len(pid) > 5 and pid[5] is not None:  # legacy view: (view key, offset, numel)
      _, offset, view_numel = pid[5]
      return storage[offset : offset + view_numel]
    return storage


def _flatten(tree, prefix='') -> dict[str, np.ndarray]:
  """Nested dicts of arrays → {'a.b.c': array} (torch state dicts are flat already)."""
  out = {}
  for k, v in tree.items():
    name = f'{prefix}{k}'
    if isinstance(v, dict):
      out.update(_flatten(v, name + '.'))
    elif isinstance(v, np.ndarray):
      out[name] = v
    elif isinstance(v, (int, float)):
      out[name] = np.asarray(v)
    else:
      raise CheckpointFormatError(f'entry {name!r} is a {type(v).__name__}, not a tensor')
  return out


def _state_dict(obj, source: str) -> dict[str, np.ndarray]:
  """The state dict inside a loaded checkpoint: itself, or under 'state_dict'/'model'/...; a
  DataParallel 'module.' prefix is removed."""
  if not isinstance(obj, dict):
    raise CheckpointFormatError(f'{source}: holds a {type(obj).__name__}, not a state dict')
  for wrapper in ('state_dict', 'model_state_dict', 'model', 'net'):
    if wrapper in obj and isinstance(obj[wrapper], dict):
      obj = obj[wrapper]
      break
  flat = _flatten(obj)
  if flat and all(k.startswith('module.') for k in flat):
    flat = {k[len('module.') :]: v for k, v in flat.items()}
  return flat


def _read_zip_torch(path: str) -> Any:
  with zipfile.ZipFile(path) as z:
    names = z.namelist()
    pkl = [n for n in names if n.endswith('/data.pkl') or n == 'data.pkl']
    if len(pkl) != 1:
      raise CheckpointFormatError(f'{path}: a zip file without exactly one data.pkl (found {pkl})')
    root = pkl[0][: -len('data.pkl')]
    byteorder = z.read(root + 'byteorder').decode() if root + 'byteorder' in names else 'little'
    if byteorder not in ('little', 'big'):
      raise CheckpointFormatError(f'{path}: unknown byteorder {byteorder!r}')

    def load_storage(storage_type, key, numel):
      raw = z.read(f'{root}data/{key}')
      dtype = storage_type.dtype.newbyteorder('<' if byteorder == 'little' else '>')
      if len(raw) < numel * dtype.itemsize:
        raise CheckpointFormatError(
          f'{path}: storage {key} holds {len(raw)} bytes, needs {numel * dtype.itemsize}'
        )
      return np.frombuffer(raw, dtype, count=numel).astype(storage_type.dtype)

    return SafeUnpickler(io.BytesIO(z.read(pkl[0])), load_storage, path).load()


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _read_legacy_torch(path: str) -> Any:
  """torch < 1.6's format: magic, protocol, sys-info and object pickles, the storage keys, then
  each storage as an int64 element count and its raw little-endian bytes.

  The storages come after the pickle that uses them, so the object pickle is read twice: once to
  learn each storage's type and size, then, with the data read, to build the tensors.
  """
  with open(path, 'rb') as f:
    plain = lambda: SafeUnpickler(f, None, path).load()  # noqa: E731
    try:
      magic = plain()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
      raise CheckpointFormatError(f'{path}: neither a zip nor a legacy PyTorch file ({e})') from e
    if magic != _LEGACY_MAGIC:
      raise CheckpointFormatError(f'{path}: not a PyTorch checkpoint (wrong magic number)')
    plain()  # protocol version
    plain()  # sys info (a dict of ints and a bool)
    start, storages = f.tell(), {}

    file_size = os.path.getsize(path)

    def describe(storage_type, key, numel):
      # The data follows in the file: a storage larger than the file is refused before any
      # allocation (a 1 KB file could otherwise ask for terabytes).
      if numel < 0 or numel * storage_type.dtype.itemsize > file_size:
        raise CheckpointFormatError(
          f'{path}: storage {key} claims {numel} elements, more than the file of {file_size} bytes holds'
        )
      storages[key] = (storage_type, numel)
      return np.zeros(numel, storage_type.dtype)

    SafeUnpickler(f, describe, path).load()
    data = {}
    for key in plain():
      key = str(key)
      if key not in storages:
        raise CheckpointFormatError(f'{path}: data for storage {key} that no tensor uses')
      storage_type, numel = storages[key]
      (count,) = struct.unpack('<q', f.read(8))
      raw = f.read(count * storage_type.dtype.itemsize)
      if count != numel or len(raw) != numel * storage_type.dtype.itemsize:
        raise CheckpointFormatError(f'{path}: storage {key} is truncated or of the wrong size')
      data[key] = np.frombuffer(raw, storage_type.dtype.newbyteorder('<')).astype(storage_type.dtype)
    if set(data) != set(storages):
      raise CheckpointFormatError(f'{path}: storages {sorted(set(storages) - set(data))} have no data')
    f.seek(start)
    return SafeUnpickler(f, lambda _type, key, _numel: data[key], path).load()


def read_torch(path: str) -> dict[str, np.ndarray]:
  """A PyTorch state dict file (`.pt`, `.pth`, `.bin`; zip or legacy format) as numpy arrays.

  Raises:
    UnsafeCheckpointError: the pickle names a global outside the allow-list (nothing is run).
    CheckpointFormatError: not a state dict, or damaged.
  """
  _exists(path)
  with _damage_is_format_error(path):
    obj = _read_zip_torch(path) if zipfile.is_zipfile(path) else _read_legacy_torch(path)
  return _state_dict(obj, path)


_SAFETENSORS_DTYPES = {
  'F64': np.float64,
  'F32': np.float32,
  'F16': np.float16,
  'BF16': ml_dtypes.bfloat16,
  'I64': np.int64,
  'I32': np.int32,
  'I16': np.int16,
  'I8': np.int8,
  'U8': np.uint8,
  'BOOL': np.bool_,
}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """A `.safetensors` file: u64 header length, a JSON header of {name: dtype, shape, offsets}, data.

  Raises:
    CheckpointFormatError: a malformed header, an unknown dtype, or offsets outside the data.
  """
  _exists(path)
  with open(path, 'rb') as f:
    blob = f.read()
  if len(blob) < 8:
    raise CheckpointFormatError(f'{path}: too short for a safetensors file')
  (n,) = struct.unpack('<Q', blob[:8])
  if 8 + n > len(blob):
    raise CheckpointFormatError(f'{path}: header length {n} exceeds the file')
  try:
    header = json.loads(blob[8 : 8 + n])
  except ValueError as e:
    raise CheckpointFormatError(f'{path}: the safetensors header is not JSON ({e})') from e
  if not isinstance(header, dict):
    raise CheckpointFormatError(f'{path}: the safetensors header is not a JSON object')
  data, out = memoryview(blob)[8 + n :], {}
  is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
  for name, info in header.items():
    if name == '__metadata__':
      continue
    if not isinstance(info, dict):
      raise CheckpointFormatError(f'{path}: tensor {name!r} is described by {info!r}, not an object')
    if info.get('dtype') not in _SAFETENSORS_DTYPES:
      raise CheckpointFormatError(f'{path}: tensor {name!r} has unsupported dtype {info.get("dtype")!r}')
    dtype = np.dtype(_SAFETENSORS_DTYPES[info['dtype']]).newbyteorder('<')
    offsets, shape = info.get('data_offsets'), info.get('shape')
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(is_int(o) for o in offsets)):
      raise CheckpointFormatError(f'{path}: tensor {name!r} has data_offsets {offsets!r}, not two integers')
    if not (isinstance(shape, list) and all(is_int(d) and d >= 0 for d in shape)):
      raise CheckpointFormatError(f'{path}: tensor {name!r} has shape {shape!r}, not integers >= 0')
    begin, end = offsets
    shape = tuple(shape)
    # Python integers: a product too large for the file is caught before anything is allocated.
    size = math.prod(shape) * dtype.itemsize
    if not 0 <= begin <= end <= len(data) or end - begin != size:
      raise CheckpointFormatError(
        f'{path}: tensor {name!r} has offsets {begin}..{end} that do not fit its shape'
      )
    out[name] = np.frombuffer(data[begin:end], dtype).reshape(shape).astype(dtype.newbyteorder('='))
  return out


def read_haiku_npy(path: str) -> dict[str, np.ndarray]:
  """DeepMind's JAX checkpoint: a `.npy` object array `(params, state)` of Haiku dicts, flattened to
  {'params/<module>/<name>': array, 'state/<module>/<name>': array} (the module path keeps its '/').

  Raises:
    UnsafeCheckpointError / CheckpointFormatError: as `read_torch`.
  """
  _exists(path)
  with open(path, 'rb') as f:
    try:
      version = np.lib.format.read_magic(f)
      read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
      if version not in read_header:
        raise ValueError(f'unsupported .npy version {version}')
      shape, _, dtype = read_header[version](f, max_header_size=1 << 20)
    except ValueError as e:
      raise CheckpointFormatError(f'{path}: not a .npy file ({e})') from e
    if dtype != np.dtype(object):
      raise CheckpointFormatError(f'{path}: a .npy of {dtype}, not the pickled (params, state) pair')
    with _damage_is_format_error(path):
      obj = SafeUnpickler(f, None, path).load()
  pair = list(np.asarray(obj, dtype=object).reshape(-1)) if isinstance(obj, np.ndarray) else list(obj)
  if len(pair) != 2 or not all(isinstance(p, dict) for p in pair):
    raise CheckpointFormatError(f'{path}: expected a (params, state) pair of dicts, got shape {shape}')
  out = {}
  for part, tree in zip(('params', 'state'), pair):
    for module, leaves in tree.items():
      if not isinstance(leaves, dict):
        raise CheckpointFormatError(f'{path}: {part}[{module!r}] is not a dict of arrays')
      for leaf, value in leaves.items():
        out[f'{part}/{module}/{leaf}'] = np.asarray(value)
  return out


def read_checkpoint(path: str) -> tuple[str, dict[str, np.ndarray]]:
  """(format, arrays) of a published checkpoint, chosen by its extension: 'torch' (.pt, .pth,
  .bin, .ckpt, .tar), 'safetensors' or 'haiku' (.npy).

  Raises:
    FileNotFoundError: no such file.
    CheckpointFormatError: an extension none of the readers takes.
  """
  ext = os.path.splitext(path)[1].lower()
  if ext in ('.pt', '.pth', '.bin', '.ckpt', '.tar'):
    return 'torch', read_torch(path)
  if ext == '.safetensors':
    return 'safetensors', read_safetensors(path)
  if ext == '.npy':
    return 'haiku', read_haiku_npy(path)
  raise CheckpointFormatError(
    f'{path}: unknown checkpoint extension {ext!r}; use .pt/.pth (PyTorch), .safetensors or .npy (DeepMind JAX)'
  )


@contextlib.contextmanager
def _damage_is_format_error(path: str):
  """A truncated or malformed pickle (any error of the unpickler or the stand-ins) is reported
  as a CheckpointFormatError naming the file; our own errors pass through."""
  try:
    yield
  except (UnsafeCheckpointError, CheckpointFormatError):
    raise
  except (
    pickle.UnpicklingError,
    EOFError,
    TypeError,
    ValueError,
    AttributeError,
    IndexError,
    KeyError,
    struct.error,
    zipfile.BadZipFile,
  ) as e:
    raise CheckpointFormatError(f'{path}: damaged or not a checkpoint ({type(e).__name__}: {e})') from e


def _exists(path: str):
  if not os.path.isfile(path):
    raise FileNotFoundError(f'checkpoint {path!r} does not exist')
