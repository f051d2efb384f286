"""Checks that the venv holds the versions that requirements.lock pins (`make` calls it after
installing, since a failed install would otherwise leave older versions in place unnoticed).

  python scripts/check_lock.py requirements.lock

A package pinned under several markers (one version for Python 3.11, another for 3.12) must be
installed at one of its pinned versions; one pinned without a marker must be installed.
Exits 1 naming every package that differs.
"""

import importlib.metadata
import re
import sys

PIN = re.compile(r'^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)\s*(;[^\\]*)?')


def normalize(name: str) -> str:
  return re.sub(r'[-_.]+', '-', name).lower()


def pins(path: str) -> dict[str, tuple[set[str], bool]]:
  """{package: (pinned versions, whether every pin has a marker)} of a lock file."""
  out: dict[str, tuple[set[str], bool]] = {}
  with open(path) as f:
    for line in f:
      m = PIN.match(line)
      if m:
        versions, marked = out.get(normalize(m.group(1)), (set(), True))
        out[normalize(m.group(1))] = (versions | {m.group(2)}, marked and bool(m.group(3)))
  return out


def main(path: str) -> int:
  installed = {normalize(d.metadata['Name']): d.version for d in importlib.metadata.distributions()}
  wrong = []
  for name, (versions, marked) in sorted(pins(path).items()):
    have = installed.get(name)
    if have is None and not marked:
      wrong.append(f'{name}: not installed (locked {", ".join(sorted(versions))})')
    elif have is not None and have not in versions:
      wrong.append(f'{name}: {have} installed, {" or ".join(sorted(versions))} locked')
  if wrong:
    print(f'{path}: the venv differs from the lock:\n  ' + '\n  '.join(wrong), file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  if len(sys.argv) != 2:
    sys.exit('usage: python scripts/check_lock.py requirements.lock')
  sys.exit(main(sys.argv[1]))
