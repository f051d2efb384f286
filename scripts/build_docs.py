"""Builds the API reference from the docstrings (`make docs`; CI runs it): one HTML page per public
module of jaxrobust, every public name with its signature, rendered by pdoc with Google-style
docstrings. Any warning pdoc raises while reading or rendering (a docstring it cannot parse, a
name it cannot resolve) fails the build, as does a public subpackage without a page.

  python scripts/build_docs.py [--out=docs/api/html]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import warnings

# The subpackages a user composes: each must get a page (pdoc walks the package from its root).
PUBLIC = (
  'jaxrobust',
  'jaxrobust.attacks',
  'jaxrobust.certify',
  'jaxrobust.evaluation',
  'jaxrobust.models',
  'jaxrobust.train',
  'jaxrobust.data',
  'jaxrobust.configs',
  'jaxrobust.adapters',
  'jaxrobust.keys',
  'jaxrobust.reproduce',
)


def _evaluated(annotations: dict, namespace: dict) -> dict:
  """Each annotation evaluated in `namespace`; one that names what the module imports only for
  type checkers stays as written."""
  import typing

  out = {}
  for name, ann in annotations.items():
    try:
      out[name] = typing._eval_type(typing.ForwardRef(ann) if isinstance(ann, str) else ann, namespace, None)
    except Exception:
      out[name] = ann
  return out


def resolve_annotations() -> None:
  """Every class of jaxrobust gets its annotations evaluated where they were written.

  Under `from __future__ import annotations` they are strings: a NamedTuple's constructor is
  generated in a namespace of its own, and a flax Module's fields inherit flax's strings, so pdoc,
  evaluating them from the constructor or from the class's own module, finds neither `np` nor
  flax's `Array`. `typing.get_type_hints` evaluates each in the module of the class that wrote it.
  """
  import importlib
  import inspect
  import pkgutil

  import jaxrobust

  names = ['jaxrobust'] + [m.name for m in pkgutil.walk_packages(jaxrobust.__path__, 'jaxrobust.')]
  for name in names:
    for _, cls in inspect.getmembers(importlib.import_module(name), inspect.isclass):
      if not cls.__module__.startswith('jaxrobust') or '__resolved__' in vars(cls):
        continue
      hints = {}
      for base in reversed(cls.__mro__):  # each annotation in the namespace of the class that wrote it
        hints.update(_evaluated(vars(base).get('__annotations__', {}), vars(sys.modules[base.__module__])))
      # A field whose default is a function of another library (an initializer) is shown with its
      # signature, whose annotations are strings of that library's module.
      for value in vars(cls).values():
        if inspect.isfunction(value) and not value.__module__.startswith('jaxrobust'):
          value.__annotations__ = _evaluated(value.__annotations__, value.__globals__)
      if hasattr(cls, '_fields'):  # a NamedTuple: its generated constructor
        cls.__new__.__annotations__ = {f: hints[f] for f in cls._fields if f in hints}
      cls.__annotations__ = hints
      cls.__resolved__ = True


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', default=os.path.join('docs', 'api', 'html'))
  args = parser.parse_args()
  import pdoc
  import pdoc.render

  pdoc.render.configure(docformat='google', show_source=False, search=True)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    resolve_annotations()
    pdoc.pdoc('jaxrobust', output_directory=pathlib.Path(args.out))
  # Only pdoc's own warnings are the reference's: a library's deprecation notice at import is not.
  ours = [w for w in caught if 'pdoc' in (w.filename or '') or issubclass(w.category, RuntimeWarning)]
  for w in ours:
    print(f'warning: {w.filename}:{w.lineno}: {w.message}', file=sys.stderr)
  missing = [m for m in PUBLIC if not (pathlib.Path(args.out) / (m.replace('.', '/') + '.html')).exists()]
  for m in missing:
    print(f'error: no page for {m}', file=sys.stderr)
  pages = sorted(pathlib.Path(args.out).rglob('*.html'))
  print(f'{len(pages)} pages in {args.out}; {len(ours)} warnings')
  return 1 if ours or missing else 0


if __name__ == '__main__':
  sys.exit(main())
