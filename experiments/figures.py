"""Figures of the study, with matplotlib (Agg): adversarial examples, confidence histograms,
accuracy against ε and against training time, and the adaptive protocol's convergence curves."""

from __future__ import annotations

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxrobust.evaluation.estimator import wilson_interval  # noqa: E402
from jaxrobust.files import write_atomic  # noqa: E402


def _img(a):
  a = np.asarray(a, np.float32)
  if a.max() > 1.0:
    a = a / 255.0
  return a[..., 0] if a.shape[-1] == 1 else a


def adversarial_examples_grid(
  path, images, adv_images, labels, clean_pred, adv_pred, class_names=(), n: int = 8, title: str = ''
):
  """Originals (top) beside their attacked versions (bottom), labelled, marked ✓/✗ (Figure 3)."""
  n = min(n, len(images))
  fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 4.2), squeeze=False)
  name = lambda k: class_names[k] if class_names else str(k)
  for i in range(n):
    for row, (im, pred) in enumerate(((images[i], clean_pred[i]), (adv_images[i], adv_pred[i]))):
      ax = axes[row][i]
      ax.imshow(_img(im), cmap='gray' if _img(im).ndim == 2 else None, vmin=0, vmax=1)
      ok = int(pred) == int(labels[i])
      head = f'true: {name(int(labels[i]))}\n' if row == 0 else ''
      ax.set_title(
        f'{head}{"✓" if ok else "✗"} {name(int(pred))}', fontsize=7, color='green' if ok else 'red'
      )
      ax.set_xticks([]), ax.set_yticks([])
  axes[0][0].set_ylabel('original', fontsize=8)
  axes[1][0].set_ylabel('attacked', fontsize=8)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  _save(fig, path)


def confidence_histograms(path, confidences: dict, correct: dict, title: str = '', ncols: int = 0):
  """Histograms of max-softmax confidence for all examples and the correctly classified ones
  (Figure 4), one panel per input kind (e.g. 'clean', 'pgd'), `ncols` panels a row (0: one row)."""
  kinds = list(confidences)
  ncols = ncols or len(kinds)
  nrows = -(-len(kinds) // ncols)
  fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3 * nrows), squeeze=False)
  bins = np.linspace(0, 1, 21)
  for ax in axes.flat[len(kinds) :]:
    ax.axis('off')
  for ax, k in zip(axes.flat, kinds):
    c = np.asarray(confidences[k])
    ok = np.asarray(correct[k], bool)
    ax.hist(c, bins=bins, alpha=0.5, label=f'all ({len(c)})')
    ax.hist(c[ok], bins=bins, alpha=0.7, label=f'correct ({ok.sum()})')
    ax.set_title(k, fontsize=9)
    ax.set_xlabel('max softmax confidence')
    ax.legend(fontsize=7)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  _save(fig, path)


def line_styles(n: int) -> list[dict]:
  """n distinct line styles: matplotlib's ten colours, then the same colours dashed with another
  marker, and so on (the colour cycle alone repeats after ten, and Table 1 has twelve rows)."""
  colors = plt.get_cmap('tab10').colors
  dashes, markers = ('-', '--', ':', '-.'), ('o', 's', '^', 'D')
  return [
    dict(color=colors[i % 10], linestyle=dashes[(i // 10) % 4], marker=markers[(i // 10) % 4])
    for i in range(n)
  ]


def plot_accuracy_vs_epsilon(path, curves: dict, xlabel: str = 'ε (L∞)', title: str = ''):
  """One PGD-accuracy curve per row: curves = {label: (epsilons, accuracies)}."""
  fig, ax = plt.subplots(figsize=(8.5, 4))
  for (label, (eps, acc)), style in zip(curves.items(), line_styles(len(curves))):
    ax.plot(eps, 100 * np.asarray(acc), ms=3, label=label, **style)
  ax.set_xlabel(xlabel)
  ax.set_ylabel('accuracy (%)')
  ax.set_ylim(0, 100)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc='center left', bbox_to_anchor=(1.01, 0.5))  # beside the curves, not on them
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  _save(fig, path)


def plot_accuracy_vs_cost(path, points: dict, title: str = ''):
  """Robust accuracy against training wall time, one labelled point per defense:
  points = {label: (seconds, accuracy)}."""
  fig, ax = plt.subplots(figsize=(6, 4))
  for i, (label, (sec, acc)) in enumerate(points.items()):
    ax.scatter([sec], [100 * acc], s=30)
    # Labels alternate above and below their points, so that equal accuracies stay readable.
    ax.annotate(
      label, (sec, 100 * acc), textcoords='offset points', xytext=(5, 6 if i % 2 == 0 else -12), fontsize=8
    )
  ax.set_xlabel('training wall time (s, compilation included)')
  ax.set_ylabel('robust accuracy (%)')
  ax.set_xlim(0, 1.6 * max(s for s, _ in points.values()))  # room for the labels
  accs = [100 * a for _, a in points.values()]
  ax.set_ylim(min(accs) - 2, max(accs) + 2)
  ax.grid(alpha=0.3)
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  _save(fig, path)


def describe_convergence(conv: dict) -> str:
  """What the doubling test of `adaptive.eot_convergence` moved, in words: 'EOT-PGD a → b %'
  and, when it was given the suite's candidates, ', worst case c → d % expected, e → f %
  majority' (the figure's title and the converged study's table both say it so)."""
  moved = f'EOT-PGD {100 * conv["at_budget"]:.1f} → {100 * conv["at_double_budget"]:.1f} %'
  if 'worst_case_expected' in conv:
    e0, e1 = 100 * conv['worst_case_expected'], 100 * conv['worst_case_expected_with_double_budget']
    m0, m1 = 100 * conv['worst_case'], 100 * conv['worst_case_with_double_budget']
    moved += f', worst case {e0:.1f} → {e1:.1f} % expected, {m0:.1f} → {m1:.1f} % majority'
  elif 'worst_case' in conv:  # records written before the worst case was selected and measured
    before, after = 100 * conv['worst_case'], 100 * conv['worst_case_with_double_budget']
    moved += f', worst case {before:.1f} → {after:.1f} % (AND of votes)'
  return moved


def plot_convergence(path, conv: dict, title: str = ''):
  """The two curves of `adaptive.eot_convergence` side by side: accuracy against EOT draws and
  against iterations, with the verdict of the doubling test in the title.

  With `conv['n']` (the number of images measured) each point carries its 95 % Wilson interval,
  so that a change of one image (a point, at n = 100) does not read as a trend; the axis always
  spans at least 10 points for the same reason. The points share their images, so the difference
  between two of them is a count of images, known more precisely than either interval suggests.
  """
  n = conv.get('n')
  fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
  for ax, xs, ys, label in (
    (axes[0], conv['draws'], conv['accuracy_vs_draws'], 'EOT draws'),
    (axes[1], conv['steps'], conv['accuracy_vs_steps'], 'iterations'),
  ):
    acc = 100 * np.asarray(ys)
    if n:
      lo, hi = 100 * np.array([wilson_interval(round(a * n), n) for a in ys]).T
      ax.errorbar(xs, acc, yerr=[acc - lo, hi - acc], marker='o', capsize=3)
    else:
      lo, hi = acc, acc
      ax.plot(xs, acc, marker='o')
    bottom, top = lo.min() - 1, hi.max() + 1
    pad = max(0.0, 10 - (top - bottom)) / 2
    ax.set_ylim(max(0, bottom - pad), min(100, top + pad))
    ax.set_xscale('log', base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.minorticks_off()
    ax.set_xlabel(label)
    ax.set_ylabel('EOT-PGD accuracy (%)' + (f', n = {n}' if n else ''))
    ax.grid(alpha=0.3)
  verdict = 'converged' if conv['converged'] else 'NOT converged'
  bars = '\nbars: 95 % interval of each point over the test set; all points attack the same images'
  fig.suptitle(
    f'{title}: {verdict}\n(doubling draws and iterations: {describe_convergence(conv)})'
    + (bars if n else ''),
    fontsize=9,
  )
  fig.tight_layout()
  _save(fig, path)


def _save(fig, path):
  write_atomic(path, lambda f: fig.savefig(f, format='png', dpi=110))  # never half a figure
  plt.close(fig)
