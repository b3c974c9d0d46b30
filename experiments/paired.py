"""Paired comparison over seeds of finished runs: is one algorithm above another, seed by seed?

Every run of this project trains its algorithms from the same θ0, data split and cohorts per
seed, so two algorithms of a run (or of two runs of the same config and seeds) are compared
seed by seed. For every entry (an algorithm of a run) and every reference in `--against`: the
mean test accuracy over the last `--last` evaluated rounds per seed, the paired differences
(entry minus reference, per seed), their mean ± std, the 95% interval of the mean, the paired t
statistic and its two-sided p-value, and the wins. Prints a table and one JSON line; with
`--out` writes the same JSON to that file.

  python -m experiments.paired --run=runs/compare --against=random,magnitude,fedavg
  python -m experiments.paired --run=adam=runs/ref --run=sgd=runs/ref_sgdexp \\
      --against=adam/random --last=10

`--run=[LABEL=]PATH`: PATH is a workdir holding `metrics.jsonl` (the label defaults to its base
name). With one run an entry is named by its algorithm, with several as LABEL/ALGORITHM; a
reference given by algorithm alone means that algorithm of the entry's own run.
"""

from __future__ import annotations

import json
import os
import statistics

from absl import app
from absl import flags

from autoflip_jax import report

_RUNS = flags.DEFINE_multi_string('run', None, '[LABEL=]PATH of a finished workdir.')
_AGAINST = flags.DEFINE_list('against', ['random', 'magnitude', 'fedavg'],
                             'References: ALGORITHM (of the entry\'s own run) or LABEL/ALGORITHM.')
_ONLY = flags.DEFINE_list('only', [], 'Entries to compare (default: every one not a reference).')
_LAST = flags.DEFINE_integer('last', 10, 'Evaluated rounds at the end whose mean accuracy counts.')
_OUT = flags.DEFINE_string('out', '', 'Also write the JSON to this file.')
flags.mark_flags_as_required(['run'])


def parse_run(spec: str) -> tuple[str, str]:
  """'[LABEL=]PATH' -> (label, path); the path must hold a metrics.jsonl."""
  label, sep, path = spec.partition('=')
  if not sep:
    label, path = os.path.basename(os.path.normpath(spec)), spec
  if not label or '/' in label:
    raise ValueError(f'--run={spec!r}: the label must be a non-empty name without "/"')
  if not os.path.isfile(os.path.join(path, 'metrics.jsonl')):
    raise ValueError(f'--run={spec!r}: {path!r} holds no metrics.jsonl (is it a finished '
                     'workdir of experiments.main or experiments.compare?)')
  return label, path


def tail_per_seed(runs: list[tuple[str, str]], last: int) -> dict[str, dict]:
  """{entry: {'run', 'algorithm', 'accuracy': {seed: tail mean}, 'rounds': {seed: last round}}}."""
  if last < 1:
    raise ValueError(f'--last={last} must be at least 1')
  labels = [label for label, _ in runs]
  if len(set(labels)) != len(labels):
    raise ValueError(f'--run labels must differ: {labels}')
  entries = {}
  for label, path in runs:
    for algorithm, by_seed in report.read_runs(os.path.join(path, 'metrics.jsonl')).items():
      name = algorithm if len(runs) == 1 else f'{label}/{algorithm}'
      entries[name] = dict(
          run=label, algorithm=algorithm,
          accuracy={seed: report.tail_accuracy(rows, last) for seed, rows in by_seed.items()},
          rounds={seed: max(r['round'] for r in rows) for seed, rows in by_seed.items()})
  return entries


def resolve(reference: str, entry: dict, entries: dict) -> str | None:
  """The entry name a reference means for `entry`: the reference itself when it names an entry
  (LABEL/ALGORITHM, or an algorithm of the only run), else that algorithm of the entry's own run
  (None: not there)."""
  for name in (reference, f"{entry['run']}/{reference}"):
    if name in entries:
      return name
  return None


def compare(entries: dict, against: list[str], only: list[str]) -> list[dict]:
  """One row per (entry, reference) that share seeds."""
  for name in only:
    if name not in entries:
      raise ValueError(f'--only={name!r} is not one of {sorted(entries)}')
  for ref in against:
    if not any(resolve(ref, e, entries) for e in entries.values()):
      raise ValueError(f'--against={ref!r}: no run holds it (entries: {sorted(entries)})')
  references = {resolve(ref, e, entries) for ref in against for e in entries.values()}
  names = only or [n for n in entries if n not in references]
  rows = []
  for name in names:
    for ref in against:
      ref_name = resolve(ref, entries[name], entries)
      if ref_name is None or ref_name == name:
        continue
      a, b = entries[name], entries[ref_name]
      diff = report.paired_differences(a['accuracy'], b['accuracy'])
      if not diff['seeds']:
        continue
      rounds = {a['rounds'][s] for s in diff['seeds']} | {b['rounds'][s] for s in diff['seeds']}
      rows.append(dict(entry=name, against=ref_name, rounds_differ=len(rounds) > 1, **diff))
  if not rows:
    raise ValueError('no entry shares a seed with a reference')
  return rows


def _points(v) -> str:
  return '' if v is None else f'{100 * v:+.1f}'


def table(entries: dict, rows: list[dict], last: int) -> str:
  lines = [f'mean test accuracy over the last {last} evaluated rounds, per seed',
           '| entry | seeds | accuracy (mean ± std over seeds) |', '|---|---|---|']
  for name, e in entries.items():
    acc = list(e['accuracy'].values())
    spread = f' ± {statistics.stdev(acc):.4f}' if len(acc) > 1 else ''
    lines.append(f'| {name} | {len(acc)} | {statistics.fmean(acc):.4f}{spread} |')
  lines += ['', 'paired differences in points (entry minus reference, same seeds)',
            '| entry | against | seeds | mean ± std | 95% interval | t | p | wins | per seed |',
            '|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    spread = f" ± {100 * r['std']:.1f}" if r['std'] is not None else ''
    ci = f"[{_points(r['ci95'][0])}, {_points(r['ci95'][1])}]" if r['ci95'] else ''
    t = f"{r['t']:+.2f}" if r['t'] is not None else ''
    p = f"{r['p']:.3f}" if r['p'] is not None else ''
    note = ' (runs of different lengths)' if r['rounds_differ'] else ''
    lines.append(f"| {r['entry']} | {r['against']} | {len(r['seeds'])} | "
                 f"{_points(r['mean'])}{spread}{note} | {ci} | {t} | {p} | "
                 f"{r['wins']}/{len(r['seeds'])} | "
                 + ', '.join(_points(d) for d in r['per_seed']) + ' |')
  return '\n'.join(lines)


def main(argv):
  del argv
  runs = [parse_run(spec) for spec in _RUNS.value]
  entries = tail_per_seed(runs, _LAST.value)
  rows = compare(entries, _AGAINST.value, _ONLY.value)
  print(table(entries, rows, _LAST.value))
  out = dict(last=_LAST.value, runs=dict(runs), entries=entries, paired=rows)  # seeds: str keys
  if _OUT.value:
    with open(_OUT.value, 'w') as f:
      json.dump(out, f, indent=1)
  print(json.dumps(out))


if __name__ == '__main__':
  app.run(main)
