"""The console of a run: our own lines on stderr (one progress line per round), everything in a file.

The libraries a run uses log a lot at INFO: orbax alone writes dozens of lines per checkpoint.
They all log through Python's `logging` (orbax through `absl.logging`, i.e. the logger named
'absl', like our own code), so a logger's name does not tell them apart; the file a record comes
from does. `setup_console` therefore puts a filter on absl's stderr handler that keeps

  * at the default `--verbosity=0`: the records of our packages (autoflip_jax, experiments,
    benchmarks) and any library's warnings and errors;
  * with `--verbosity=1` or more: every record, as absl would print it.

and adds a handler to the root logger that writes every INFO line (ours and the libraries') to
`<workdir>/log.txt`, whatever the verbosity. Lines that C++ code writes straight to stderr
(XLA, tensorstore) pass by Python's logging and are not filtered.
"""

from __future__ import annotations

import functools
import logging
import os

from absl import logging as absl_logging
import jax

LOG_FILE = 'log.txt'

# Our code: the package and the entry points next to it (in a checkout; an installed package
# has only itself).
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
OWN_DIRS = tuple(os.path.realpath(d) for d in (
    _PACKAGE_DIR, *(os.path.join(os.path.dirname(_PACKAGE_DIR), name)
                    for name in ('experiments', 'benchmarks'))))

# What the last `setup_console` installed and the root level it found, so that a second call
# replaces the first (notebooks, tests) instead of stacking on it.
_installed: list[tuple[logging.Filterer, logging.Filter | logging.Handler]] = []
_root_level: list[int] = []


@functools.lru_cache(maxsize=1024)
def _is_own(pathname: str, dirs: tuple[str, ...]) -> bool:
  """Whether the source file `pathname` lies inside one of `dirs`."""
  path = os.path.realpath(pathname)
  return any(path.startswith(d + os.sep) for d in dirs)


class ConsoleFilter(logging.Filter):
  """Keeps a record at `level` or above that comes from our code (its `pathname` inside
  `dirs`), or that is a warning or worse from anywhere; `quiet=False` keeps every record at
  `level` or above."""

  def __init__(self, level: int, quiet: bool = True, dirs: tuple[str, ...] = OWN_DIRS):
    super().__init__()
    self.level = level
    self.quiet = quiet
    self.dirs = dirs

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno < self.level:
      return False
    return (not self.quiet or record.levelno >= logging.WARNING
            or _is_own(record.pathname, self.dirs))


class _PrefixFormatter(logging.Formatter):
  """absl's line format (`I1201 11:04:32.232426 1400 train.py:314] ...`) for any record."""

  def format(self, record: logging.LogRecord) -> str:
    return absl_logging.get_absl_log_prefix(record) + super().format(record)


def restore_console() -> None:
  """Removes what `setup_console` installed (its filter and log file) and restores the root
  logger's level."""
  for target, item in _installed:
    if isinstance(item, logging.Handler):
      target.removeHandler(item)
      item.close()
    else:
      target.removeFilter(item)
  _installed.clear()
  if _root_level:
    logging.getLogger().setLevel(_root_level.pop())


def setup_console(workdir: str, verbosity: int | None = None) -> str | None:
  """Quiets the libraries' INFO lines on stderr and writes every line to `<workdir>/log.txt`.

  Call it after absl has parsed the flags (inside `app.run`'s main) and, in a multi-process run,
  after `jax.distributed.initialize` (it asks for the process index): like the workdir's other
  files the log file is written by process 0 alone; the others log to stderr only. The file is
  appended to, so a resumed run keeps the earlier runs' lines. A second call replaces what the
  first installed.

  Args:
    workdir: the run's directory (created if missing).
    verbosity: absl's `--verbosity`; None reads the flag. 0 (the default) shows our own lines
      and every warning, 1 or more shows every library's lines too, below 0 fewer of our own.

  Returns:
    The log file's path, or None on a process that writes none.
  """
  restore_console()
  if verbosity is None:
    verbosity = absl_logging.get_verbosity()
  root = logging.getLogger()
  # absl has set the root level from --verbosity (INFO at 0, WARNING at -1): that stays the
  # console's level, while the root itself must pass INFO on to the file.
  console_level = root.getEffectiveLevel()
  _root_level.append(root.level)
  root.setLevel(min(console_level, logging.INFO))
  console = ConsoleFilter(console_level, quiet=verbosity < 1)
  absl_handler = absl_logging.get_absl_handler()
  absl_handler.addFilter(console)
  _installed.append((absl_handler, console))
  if jax.process_index() != 0:
    return None
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOG_FILE)
  handler = logging.FileHandler(path, encoding='utf-8')
  handler.setFormatter(_PrefixFormatter())
  root.addHandler(handler)
  _installed.append((root, handler))
  return path
