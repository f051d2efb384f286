"""Seals piece caches written before pieces carried checksums, so that their results are reused.

  python scripts/seal_pieces.py results/converged/fashion_mnist/pieces/lwta/adaptive ...

A piece cache stores every piece with the digest of its settings and a checksum
(`jaxrobust.evaluation.cache.seal`), and sets aside any piece without them. Older directories
(raw JSON pieces) are sealed here, each piece under the settings of its own `settings.json`.
Sealing vouches for the files as they are, so it is done only for files that git holds
unchanged (committed results, whose history is their provenance); `--trust` seals other files,
for a directory whose origin you know.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys

sys.path.insert(0, os.getcwd())  # run from the repository root, as the other scripts
from jaxrobust.evaluation.cache import FORMAT, SETTINGS, _read, seal, settings_digest, unseal  # noqa: E402
from jaxrobust.files import write_json_atomic  # noqa: E402


def _unchanged_in_git(paths: list[str]) -> list[str]:
  """The paths that git does not hold unchanged (untracked, or modified against HEAD)."""
  bad = []
  for p in paths:
    d, name = os.path.split(os.path.abspath(p))
    tracked = subprocess.run(['git', '-C', d, 'ls-files', '--error-unmatch', name], capture_output=True)
    changed = subprocess.run(['git', '-C', d, 'diff', '--quiet', 'HEAD', '--', name], capture_output=True)
    if tracked.returncode != 0 or changed.returncode != 0:
      bad.append(p)
  return bad


def _is_sealed(obj) -> bool:
  return isinstance(obj, dict) and obj.get('format') == FORMAT


def seal_directory(directory: str, *, trust: bool = False) -> int:
  """Seals the legacy pieces of one cache directory; returns how many were sealed.

  Raises:
    ValueError: naming the directory or the files, when it has no settings.json, when a file is
      not JSON, or (without `trust`) when git does not hold the files unchanged.
  """
  settings_path = os.path.join(directory, SETTINGS)
  if not os.path.exists(settings_path):
    raise ValueError(f'{directory}: no {SETTINGS}; not a piece cache')
  stored = _read(settings_path)
  settings, why = unseal(stored, 'settings')
  if why is not None:
    if _is_sealed(stored):
      raise ValueError(f'{settings_path}: {why}')
    settings = stored
  pieces = [p for p in sorted(glob.glob(os.path.join(directory, '*.json'))) if p != settings_path]
  # Only unsealed files: a sealed piece that fails its checksum is left for the cache to set aside.
  legacy = [p for p in pieces if not _is_sealed(_read(p))]
  if why is None and not legacy:
    return 0
  if not trust:
    bad = _unchanged_in_git(([settings_path] if why else []) + legacy)
    if bad:
      raise ValueError(
        f'{directory}: git does not hold these files unchanged, so sealing would vouch for '
        f'unknown contents: {bad[:5]}{" ..." if len(bad) > 5 else ""} (use --trust if you know them)'
      )
  identity = settings_digest(settings)
  for p in legacy:
    write_json_atomic(p, seal(_read(p), identity))
  if why is not None:
    write_json_atomic(settings_path, seal(settings, 'settings'))
  return len(legacy)


def main(argv: list[str]) -> int:
  trust = '--trust' in argv
  dirs = [a for a in argv if a != '--trust']
  if not dirs:
    print('usage: python scripts/seal_pieces.py [--trust] DIR [DIR ...]', file=sys.stderr)
    return 2
  for d in dirs:
    print(f'{d}: {seal_directory(d, trust=trust)} pieces sealed')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
