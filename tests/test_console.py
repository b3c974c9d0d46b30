"""The console shows our lines and every warning; the log file gets every line (`console`)."""

import logging
import os

from absl import logging as absl_logging

from autoflip_jax import console

LIBRARY = os.path.join(os.sep, 'venv', 'site-packages', 'orbax', 'checkpoint_manager.py')


def _record(pathname, level=logging.INFO):
  return logging.LogRecord('absl', level, pathname, 1, 'a line', None, None)


def test_filter_keeps_our_lines_and_every_warning():
  quiet = console.ConsoleFilter(logging.INFO)
  assert quiet.filter(_record(console.__file__))
  assert not quiet.filter(_record(LIBRARY))
  assert quiet.filter(_record(LIBRARY, logging.WARNING))
  assert not quiet.filter(_record(console.__file__, logging.DEBUG))
  loud = console.ConsoleFilter(logging.INFO, quiet=False)  # --verbosity=1
  assert loud.filter(_record(LIBRARY))


def test_log_file_gets_every_info_line(tmp_path):
  root_level = logging.getLogger().level
  path = console.setup_console(str(tmp_path / 'run'), verbosity=0)
  try:
    logging.getLogger('orbax.fake').info('a library line')
    absl_logging.info('our line')
    logging.getLogger('orbax.fake').debug('a debug line')
  finally:
    console.restore_console()
  assert path == str(tmp_path / 'run' / 'log.txt')
  text = open(path).read()
  assert 'a library line' in text and 'our line' in text and 'debug' not in text
  assert logging.getLogger().level == root_level
