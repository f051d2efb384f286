"""Atomic writes: the file appears whole, with the permissions `open` would give it."""

import os
import stat

import pytest

from jaxrobust.files import write_atomic, write_json_atomic


def test_an_atomic_file_gets_the_umask_permissions_not_the_temporary_files(tmp_path):
  umask = os.umask(0o022)
  try:
    import importlib

    import jaxrobust.files as files

    importlib.reload(files)  # the mode is read at import
    path = files.write_atomic(tmp_path / 'a.txt', 'x')
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    with open(tmp_path / 'b.txt', 'w') as f:
      f.write('x')
    assert stat.S_IMODE(os.stat(path).st_mode) == stat.S_IMODE(os.stat(tmp_path / 'b.txt').st_mode)
  finally:
    os.umask(umask)
    importlib.reload(files)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
  path = write_json_atomic(tmp_path / 'r.json', {'a': 1})

  def broken(f):
    f.write(b'{"half": ')
    raise RuntimeError('interrupted')

  with pytest.raises(RuntimeError, match='interrupted'):
    write_atomic(path, broken)
  assert open(path).read() == '{"a": 1}'
  assert os.listdir(tmp_path) == ['r.json']
