"""Table 1 as Markdown and JSON."""

from __future__ import annotations

import math
import os

from jaxrobust.files import write_atomic, write_json_atomic

COLUMNS = [
  ('clean', 'Natural'),
  ('fgsm', 'FGSM'),
  ('pgd_linf', 'PGD-L∞'),
  ('pgd_l2', 'PGD-L2'),
  ('cw_l2', 'CW-L2 (upper bound)'),
  ('apgd_ce', 'APGD-CE'),
  ('apgd_dlr', 'APGD-DLR'),
  ('eot_pgd', 'EOT-PGD'),
  ('eot_apgd', 'EOT-APGD'),
  ('eot_pgd_l2', 'EOT-PGD-L2'),
  ('eot_apgd_l2', 'EOT-APGD-L2'),
  ('eot_expected_probability', 'EOT expected probability'),
  ('eot_straight_through', 'EOT straight-through'),
  ('transfer_low_temperature', 'Transfer, low temperature'),
  ('eot_expected_probability_l2', 'EOT expected probability, L2'),
  ('eot_straight_through_l2', 'EOT straight-through, L2'),
  ('transfer_low_temperature_l2', 'Transfer, low temperature, L2'),
  ('transfer', 'Transfer'),
  ('autoattack', 'AutoAttack'),
  ('worst_case', 'Worst case'),
  ('verified_linf', 'Verified L∞ (lower bound)'),
  ('certified_l2', 'Certified L2, smoothed (lower bound)'),
]


def _pct(v):
  return '–' if v is None else f'{100 * v:.1f}'


# A stochastic row's worst case, marked in the table and explained under it.
AND_OF_DRAWS = '†'
AND_OF_DRAWS_NOTE = (
  f'{AND_OF_DRAWS} On a stochastic row the worst case ANDs attacks each judged on its own single '
  'draw of the model: prediction noise counts as breaks, so it is biased low and is not comparable '
  "with a deterministic row's worst case. The comparable figure for a stochastic model is the "
  'select-then-measure worst case of the converged study (docs/results.md, "Is stochastic LWTA '
  'robust?"); compare stochastic and deterministic rows here on AutoAttack (AA-rand on a stochastic row).'
)


# A stochastic row's worst case selected and measured (records that have it).
SELECTED = '‡'
SELECTED_NOTE = (
  f"{SELECTED} A stochastic row's worst case selected and measured: each point's worst candidate "
  "(the clean point, every attack's, AutoAttack's) chosen on {selection} draws of the model and "
  'classified by the majority of {measurement} fresh ones (the expected accuracy over those draws '
  'in parentheses). Unbiased for the chosen candidates (the per-point minimum over candidates can '
  'only be lower).'
)
# What makes it comparable with a deterministic row's worst case: both threats attacked with EOT
# and the sampling attacked at both as the adaptive protocol does (records written before lack them).
COMPARABLE_ATTACKS = ('eot_pgd_l2', 'eot_expected_probability', 'eot_expected_probability_l2')
COMPARABLE_NOTE = (
  ' Both threats are attacked with EOT (EOT-PGD and EOT-APGD at the L∞ and at the L2 ε; CW-L2 stays '
  "single-draw) and the model's sampling at both ε as in the adaptive protocol (PGD on the expected "
  'probability; for LWTA also straight-through winners and transfer from a low temperature), so it '
  "is compared with the reference row's worst case point by point below."
)
NOT_COMPARABLE_NOTE = (
  " Not comparable with a deterministic row's for {rows}: the record predates the suite's EOT "
  'attacks at the L2 ε or its attacks on the sampling at both ε, so its candidates are weak; compare such a '
  'row with a deterministic one on AutoAttack (AA-rand on a stochastic row).'
)
REFERENCE_ROW = 'pgd_at'


def _cell(res: dict, key: str) -> str:
  # A randomized model gets no interval certificate: say so rather than leave the cell empty.
  if key == 'verified_linf' and res.get(key) is None and res.get('stochastic'):
    return 'none (random)'
  if key == 'worst_case' and res.get('stochastic') and res.get('worst_case_selected') is not None:
    return f'{_pct(res["worst_case_selected"])} {SELECTED} ({_pct(res["worst_case_selected_expected"])})'
  if key == 'worst_case' and res.get('stochastic') and res.get(key) is not None:
    return f'{_pct(res[key])} {AND_OF_DRAWS}'
  return _pct(res.get(key))


def comparable(res: dict) -> bool:
  """A stochastic row's selected worst case compares with a deterministic row's: its suite ran
  the EOT attacks of both threats and the attacks on the sampling at both."""
  attacks = res.get('attacks', {})
  return res.get('worst_case_selected') is not None and all(a in attacks for a in COMPARABLE_ATTACKS)


def paired_lines(rows: list[dict]) -> list[str]:
  """Each stochastic row with a comparable selected worst case, paired point by point with the
  reference row's worst case on the same images (`experiments.paired`): the difference in points
  with its 95 % interval, the discordant points and McNemar's exact p.

  Raises:
    ValueError: when a row and the reference hold different numbers of points.
  """
  from experiments.paired import mcnemar, paired

  ref = next((r for r in rows if r.get('row') == REFERENCE_ROW), None)
  if ref is None:
    return []
  ref_won = ref['result']['per_example']['worst_case']
  lines = []
  for r in rows:
    if not (r['result'].get('stochastic') and comparable(r['result'])):
      continue
    won = r['result']['per_example']['worst_case_selected']
    if len(won) != len(ref_won):
      raise ValueError(f'{r["row"]}: {len(won)} points, {REFERENCE_ROW} has {len(ref_won)}')
    d, t = paired(won, ref_won), mcnemar(won, ref_won)
    lines.append(
      f'- {r["title"]} − {ref["title"]}: {100 * d["difference"]:+.1f} points '
      f'[{100 * d["interval"][0]:+.1f}, {100 * d["interval"][1]:+.1f}] by majority; robust only in the '
      f'row / only in the reference: {t["only_row"]} / {t["only_reference"]}, McNemar p = {t["p_value"]:.2g}.'
    )
  if not lines:
    return []
  return ['', f'Paired with {ref["title"]} on the same images (worst cases, per point):', ''] + lines


def _ms(v) -> str:
  return f'{v:.3f}' if isinstance(v, (int, float)) and math.isfinite(v) else '–'


def train_seconds(record: dict) -> float | None:
  """The row's training wall time, or None when none was measured: a run resumed from its
  checkpoints timed only its last part, so its figure stands only once a retime pass replaced it."""
  seconds = record.get('train_time_s')
  if seconds is None or (record.get('resumed') and record.get('train_time_pass') != 'retimed'):
    return None
  return float(seconds)


def table_markdown(rows: list[dict], *, caption: str = '') -> str:
  """Rows of {'title', 'result': evaluate_model output, 'train_time_s'} as a Markdown table; only
  columns that some row has are shown, and a time that was not measured is '–' (`train_seconds`)."""
  cols = [(k, t) for k, t in COLUMNS if any(k in r['result'] for r in rows)]
  head = '| Defense | ' + ' | '.join(t for _, t in cols) + ' | ms/image | train s |'
  sep = '|' + '---|' * (len(cols) + 3)
  lines = [caption, '', head, sep] if caption else [head, sep]
  for r in rows:
    res = r['result']
    mark = ' (stochastic)' if res.get('stochastic') else ''
    seconds = train_seconds(r)
    lines.append(
      f'| {r["title"]}{mark} | '
      + ' | '.join(_cell(res, k) for k, _ in cols)
      + f' | {_ms(res.get("ms_per_image"))} | {"–" if seconds is None else f"{seconds:.0f}"} |'
    )
  stochastic = [r['result'] for r in rows if r['result'].get('stochastic') and 'worst_case' in r['result']]
  selected = [res for res in stochastic if res.get('worst_case_selected') is not None]
  if selected:
    note = SELECTED_NOTE.format(
      selection=selected[0]['selection_draws'], measurement=selected[0]['measurement_draws']
    )
    weak = [
      r['title']
      for r in rows
      if r['result'].get('worst_case_selected') is not None and not comparable(r['result'])
    ]
    note += NOT_COMPARABLE_NOTE.format(rows=', '.join(weak)) if weak else COMPARABLE_NOTE
    lines += ['', note]
  if len(selected) < len(stochastic):
    lines += ['', AND_OF_DRAWS_NOTE]
  lines += paired_lines(rows)
  return '\n'.join(lines) + '\n'


def write_table(out_dir: str, rows: list[dict], *, caption: str = '') -> tuple[str, str]:
  """Writes table1.md and table1.json (without per-example arrays) to out_dir; returns paths."""
  md = write_atomic(os.path.join(out_dir, 'table1.md'), table_markdown(rows, caption=caption))
  slim = [dict(r, result={k: v for k, v in r['result'].items() if k != 'per_example'}) for r in rows]
  js = write_json_atomic(os.path.join(out_dir, 'table1.json'), slim, indent=1)
  return md, js
