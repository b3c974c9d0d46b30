"""Bad input fails with a message naming the field, before any data is read or anything compiles."""

import ml_collections
import pytest

import jax

from autoflip_jax import setup as setup_lib
from autoflip_jax import train
from tests.helpers import tiny_config


@pytest.fixture
def no_data(monkeypatch):
  """Any data load or compile means validation came too late."""
  def fail(*args, **kwargs):
    raise AssertionError('validation must fail before data is loaded or a program compiles')
  monkeypatch.setattr(setup_lib.data_lib, 'load', fail)
  monkeypatch.setattr(jax, 'jit', fail)


@pytest.mark.parametrize('field, value, message', [
    ('tp', 1.0, 'config.tp=1.0 must be a number in [0.0, 1.0)'),
    ('tp', -0.1, 'config.tp=-0.1'),
    ('e_exp', -1, 'config.e_exp=-1 must be an integer >= 0'),
    ('e_exp', 0, 'config.e_exp=0 with algorithm autoflip'),
    ('c_exp', 0.0, 'config.c_exp=0.0'),
    ('c_exp', 1.5, 'config.c_exp=1.5'),
    ('model', 'vgg', "config.model='vgg' is not one of"),
    ('data.name', 'imagenet', "config.data.name='imagenet'"),
    ('algorithm', 'autoflip,fedprox', "config.algorithm='autoflip,fedprox'"),
    ('algorithm', '', "config.algorithm=''"),
    ('num_clients', 5000, 'num_clients'),
    ('clients_per_round', 5, 'config.clients_per_round=5 must be an integer in [1, 4]'),
    ('num_rounds', 0, 'config.num_rounds=0'),
    ('local_epochs', 0, 'config.local_epochs=0'),
    ('batch_size', 0, 'config.batch_size=0'),
    ('learning_rate', 0.0, 'config.learning_rate=0.0'),
    ('optimizer', 'adamw', "config.optimizer='adamw'"),
    ('guidance_normalization', 'zscore', "config.guidance_normalization='zscore'"),
    ('exploration_optimizer', 'rmsprop', "config.exploration_optimizer='rmsprop' is not one of"),
    ('exploration_learning_rate', -0.1, 'config.exploration_learning_rate=-0.1'),
    ('structured_threshold', 0.0, 'config.structured_threshold=0.0'),
    ('structured_rule', 'layers', "config.structured_rule='layers'"),
    ('structured_tp', 1.0, 'config.structured_tp=1.0 must be a number in [0.0, 1.0)'),
    ('guidance_per_round', True, 'config.guidance_per_round=True needs config.c_exp=1.0'),
])
def test_bad_config_is_rejected_before_compiling(no_data, tmp_path, field, value, message):
  overrides = {field: value}
  if field == 'guidance_per_round':
    overrides['c_exp'] = 0.5
  with pytest.raises(ValueError) as err:
    train.train_and_evaluate(tiny_config(**overrides), str(tmp_path))
  assert message in str(err.value)
  assert not (tmp_path / 'metrics.jsonl').exists()


@pytest.mark.parametrize('overrides, message', [
    ({'tp_sweep': '0.1,1.0'}, "config.tp_sweep='0.1,1.0': '1.0' is not a number in [0.0, 1.0)"),
    ({'tp_sweep': '-0.1'}, "'-0.1' is not a number in [0.0, 1.0)"),
    ({'tp_sweep': '0.1,abc'}, "config.tp_sweep='0.1,abc': 'abc' is not a number"),
    ({'tp_sweep': '0.1,,0.2'}, "'' is not a number"),
    ({'tp_sweep': ','}, "config.tp_sweep=','"),
    ({'tp_sweep': '0.1,nan'}, "'nan' is not a number"),
    ({'tp_sweep': '0.2,0.1,0.20'}, "config.tp_sweep='0.2,0.1,0.20' repeats the threshold(s) 0.2"),
    ({'tp_sweep': '0.1,0.2', 'algorithm': 'fedavg'},
     "config.tp_sweep='0.1,0.2' sweeps AutoFLIP's threshold but config.algorithm='fedavg' has "
     'no autoflip'),
    ({'tp_sweep': '0.1,0.2', 'guidance_per_round': True},
     "config.tp_sweep='0.1,0.2' cannot be combined with config.guidance_per_round=True"),
])
def test_bad_tp_sweep_is_rejected_before_compiling(no_data, tmp_path, overrides, message):
  with pytest.raises(ValueError) as err:
    train.train_and_evaluate(tiny_config(**overrides), str(tmp_path))
  assert message in str(err.value)
  assert not (tmp_path / 'metrics.jsonl').exists()


@pytest.mark.parametrize('value, tps', [
    ('', ()), ('  ', ()), ('0.3', (0.3,)), ('0.1, 0.2,0.3', (0.1, 0.2, 0.3)), ('0,0.5', (0.0, 0.5)),
])
def test_tp_sweep_values(value, tps):
  from autoflip_jax.config_checks import tp_sweep_values, validate_config
  config = tiny_config(tp_sweep=value)
  validate_config(config)
  assert tp_sweep_values(config) == tps


def test_more_clients_than_examples_is_rejected(no_data, tmp_path):
  config = tiny_config(num_clients=4001, clients_per_round=2)
  with pytest.raises(ValueError, match='num_clients'):
    train.train_and_evaluate(config, str(tmp_path))


def test_fedavg_alone_accepts_e_exp_zero(tmp_path):
  """e_exp=0 is only an error when AutoFLIP has to explore."""
  from autoflip_jax.config_checks import validate_config
  validate_config(tiny_config(algorithm='fedavg', e_exp=0))


def test_norm_statistics_is_checked_before_compiling(no_data, tmp_path):
  resnet = tiny_config(model='resnet18')
  resnet.model_config = ml_collections.ConfigDict({'width': 4, 'norm_statistics': 'mean'})
  with pytest.raises(ValueError, match="norm_statistics='mean' is not one of"):
    train.train_and_evaluate(resnet, str(tmp_path))
  cnn = tiny_config()
  with cnn.unlocked():
    cnn.model_config.norm_statistics = 'live'
  with pytest.raises(ValueError, match='for the GroupNorm models'):
    train.train_and_evaluate(cnn, str(tmp_path))
  assert not (tmp_path / 'metrics.jsonl').exists()


def test_share_rule_takes_no_structured_quantile():
  from autoflip_jax.config_checks import validate_config  # noqa: PLC0415
  with pytest.raises(ValueError, match="config.structured_tp=0.3 with config.structured_rule="
                                       "'share'"):
    validate_config(tiny_config(structured_rule='share', structured_tp=0.3))
  validate_config(tiny_config(structured_rule='global', structured_tp=0.3))
