"""Counts how often a WideResNet forward and input gradient kill a fresh process.

jaxlib 0.10.2's XLA CPU backend fuses a pre-activation WideResNet (everything after its first
convolution) into one YNNPACK graph; running that compiled program intermittently corrupts the
heap (`free(): invalid pointer`, `corrupted double-linked list`, segmentation faults). This
script reproduces it in two forms and counts crashes over fresh processes, because a crash
depends on the heap's state and so on the process, not on the inputs:

- `--net=lax`: a pure `jax.lax` pre-activation WRN-16-4 (no flax, no jaxrobust): stem 3×3
  convolution, three groups of two blocks (BatchNorm in inference form as a scale and shift,
  ReLU, 3×3 convolutions, a 1×1 strided projection shortcut where the width changes), global
  average pool, dense. This is the form to report upstream and to recheck against a new jaxlib.
- `--net=wrn16_4`: jaxrobust's own `create_model('wrn16_4')` attacked the way a user would.

Each child process runs the forward pass and the input gradient `--calls` times at `--batch`
images of 32×32×3, and exits 3 if an output is not finite. The parent prints one JSON line: runs, crashes (non-zero exits, with their
signals or exit codes), the versions, XLA_FLAGS and the CPU. Exit status 1 when any run crashed.

`--fusions` compiles the `jax.lax` programs without running them and counts the YNNPACK fusions
XLA made of them (0 when `XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=` turns them off).

Usage:
  python scripts/wrn_crash.py --net=lax --runs=30
  python scripts/wrn_crash.py --fusions
  XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=... python scripts/wrn_crash.py --net=wrn16_4
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import subprocess
import sys
import time


def lax_programs():
  """The pure `jax.lax` reproduction: (forward, input gradient) of a random WRN-16-4, jitted."""
  import jax
  import jax.numpy as jnp
  from jax import lax

  dn = ('NHWC', 'HWIO', 'NHWC')
  keys = iter(jax.random.split(jax.random.key(0), 64))

  def conv_w(k, cin, cout):
    return jax.random.normal(next(keys), (k, k, cin, cout)) * (2.0 / (k * k * cout)) ** 0.5

  def bn(c):  # inference-mode BatchNorm: a per-channel scale and shift
    return 1.0 + 0.1 * jax.random.normal(next(keys), (c,)), 0.1 * jax.random.normal(next(keys), (c,))

  def conv(x, w, stride, pad):
    return lax.conv_general_dilated(x, w, (stride, stride), pad, dimension_numbers=dn)

  widths, params = [16, 64, 128, 256], {'stem': conv_w(3, 3, 16), 'blocks': []}
  cin = 16
  for g, stride in enumerate((1, 2, 2)):
    for i in range(2):
      cout, s = widths[g + 1], (stride if i == 0 else 1)
      block = {'bn1': bn(cin), 'c1': conv_w(3, cin, cout), 'bn2': bn(cout), 'c2': conv_w(3, cout, cout)}
      if cin != cout:
        block['short'] = conv_w(1, cin, cout)  # the 1×1 projections are needed for the crash
      params['blocks'].append((block, s))
      cin = cout
  params['bn'], params['fc'] = bn(cin), jax.random.normal(next(keys), (cin, 10)) * 0.05

  def forward(x):
    x = conv(x, params['stem'], 1, ((1, 1), (1, 1)))
    for block, s in params['blocks']:
      o = jax.nn.relu(x * block['bn1'][0] + block['bn1'][1])
      short = conv(o, block['short'], s, 'VALID') if 'short' in block else x
      o = conv(o, block['c1'], s, ((1, 1), (1, 1)))
      o = jax.nn.relu(o * block['bn2'][0] + block['bn2'][1])
      x = short + conv(o, block['c2'], 1, ((1, 1), (1, 1)))
    x = jax.nn.relu(x * params['bn'][0] + params['bn'][1])
    return jnp.mean(x, axis=(1, 2)) @ params['fc']

  loss = lambda x: jnp.sum(jax.nn.log_softmax(forward(x))[:, 0])
  return jax.jit(forward), jax.jit(jax.grad(loss))


def lax_wrn16_4(batch: int, calls: int) -> None:
  """Runs the `jax.lax` reproduction's forward and gradient `calls` times."""
  import jax

  f, g = lax_programs()
  x = jax.random.uniform(jax.random.key(1), (batch, 32, 32, 3))
  for _ in range(calls):
    require_finite(f(x), g(x))


def ynn_fusions(batch: int) -> dict:
  """How many YNNPACK fusions XLA makes of the reproduction's forward and gradient programs
  (compiled only, never run), and how many operations the largest one holds."""
  import re

  import jax.numpy as jnp

  out = {}
  for name, program in zip(('forward', 'gradient'), lax_programs()):
    text = program.lower(jnp.zeros((batch, 32, 32, 3))).compile().as_text()
    fusions = re.findall(r'%ynn_fusion(?:\.\d+)? = .*calls=%([\w.]+)', text)
    sizes = [len(_computation(text, c)) for c in fusions]
    out[name] = {'ynn_fusions': len(fusions), 'largest_ops': max(sizes, default=0)}
  return out


def _computation(text: str, name: str) -> list[str]:
  """The instruction lines of the HLO computation `name`."""
  lines, inside = [], False
  for line in text.splitlines():
    if line.startswith(f'%{name} ') or line.startswith(f'{name} '):
      inside = True
    elif inside and line.startswith('}'):
      break
    elif inside and '=' in line:
      lines.append(line)
  return lines


def jaxrobust_wrn16_4(batch: int, calls: int) -> None:
  """jaxrobust's WRN-16-4 through its public API: forward and input gradient of the logits."""
  import jax
  import jax.numpy as jnp

  from jaxrobust.models import create_model, make_logits_fn

  model = create_model('wrn16_4', num_classes=10)
  x = jax.random.uniform(jax.random.key(1), (batch, 32, 32, 3))
  logits_fn = make_logits_fn(model, jax.jit(model.init)(jax.random.key(0), x[:2]))
  key = jax.random.key(2)
  f = jax.jit(lambda x, key, fn: fn(x, key))
  g = jax.jit(jax.grad(lambda x, fn: jnp.sum(jax.nn.log_softmax(fn(x, key))[:, 0])))
  for _ in range(calls):
    require_finite(f(x, key, logits_fn), g(x, logits_fn))


def require_finite(*arrays) -> None:
  """Exits with status 3 when an output is not finite: a heap corrupted quietly is a crash too."""
  import numpy as np

  if not all(np.isfinite(np.asarray(a)).all() for a in arrays):
    print('non-finite output', file=sys.stderr)
    sys.exit(3)


NETS = {'lax': lax_wrn16_4, 'wrn16_4': jaxrobust_wrn16_4}


def environment() -> dict:
  """Versions, flags and CPU, read without importing JAX in the parent."""
  from importlib.metadata import PackageNotFoundError, version

  def v(name):
    try:
      return version(name)
    except PackageNotFoundError:
      return None

  cpu = platform.processor()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), cpu)
  except OSError:
    pass
  try:
    commit = subprocess.run(
      ['git', 'rev-parse', 'HEAD'], capture_output=True, text=True, cwd=os.path.dirname(__file__)
    ).stdout.strip()
  except OSError:
    commit = ''
  return {
    'commit': commit or None,
    'jax': v('jax'),
    'jaxlib': v('jaxlib'),
    'python': platform.python_version(),
    'xla_flags': os.environ.get('XLA_FLAGS', ''),
    'cpu': cpu,
    'cores': os.cpu_count(),
  }


def describe(returncode: int) -> str:
  """'SIGSEGV' for a signal, 'exit 134' for an exit code."""
  import signal

  if returncode < 0:
    try:
      return signal.Signals(-returncode).name
    except ValueError:
      return f'signal {-returncode}'
  return f'exit {returncode}'


def count_crashes(net: str, runs: int, batch: int, calls: int, timeout: float) -> dict:
  """Runs the child `runs` times in fresh processes and counts those that did not exit 0."""
  outcomes, messages, started = collections.Counter(), collections.Counter(), time.time()
  for _ in range(runs):
    cmd = [sys.executable, __file__, '--child', f'--net={net}', f'--batch={batch}', f'--calls={calls}']
    try:
      done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
      outcomes['timeout'] += 1
      continue
    if done.returncode != 0:
      outcomes[describe(done.returncode)] += 1
      tail = [line for line in done.stderr.strip().splitlines() if line.strip()][-1:]
      messages[tail[0][:120] if tail else '(no message)'] += 1
    else:
      outcomes['ok'] += 1
  return {
    'net': net,
    'batch': batch,
    'calls': calls,
    'runs': runs,
    'crashes': runs - outcomes['ok'],
    'outcomes': dict(outcomes),
    'messages': dict(messages),
    'seconds': round(time.time() - started, 1),
    'environment': environment(),
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--net', choices=sorted(NETS), default='lax')
  parser.add_argument('--runs', type=int, default=30, help='fresh processes')
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--calls', type=int, default=3, help='forward + gradient calls per process')
  parser.add_argument('--timeout', type=float, default=600.0, help='seconds per process')
  parser.add_argument('--fusions', action='store_true', help='count the YNN fusions of the lax programs')
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  for name in ('runs', 'batch', 'calls'):
    if getattr(args, name) < 1:
      parser.error(f'--{name} must be >= 1, got {getattr(args, name)}')
  if args.child:
    NETS[args.net](args.batch, args.calls)
    return 0
  if args.fusions:
    print(json.dumps({'environment': environment(), 'fusions': ynn_fusions(args.batch)}), flush=True)
    return 0
  report = count_crashes(args.net, args.runs, args.batch, args.calls, args.timeout)
  print(json.dumps(report), flush=True)
  return 1 if report['crashes'] else 0


if __name__ == '__main__':
  sys.exit(main())
