"""Does structured pruning really save time? Dense vs shrunk model, side by side in one run.

For each model: random guidance (uniform per parameter), the hybrid mask at `--tp` (AUTOFLIP.md
§2; with random guidance hardly any unit has every incoming weight pruned, so units are removed
by `--structured_tp`, the quantile of unit scores), `shrink.shrink` to the physically smaller
model, then the jitted forward + backward pass (cross-entropy, gradient w.r.t. all params) of the
dense and of the shrunk model on the same batch: first call (compile) excluded, median of
`--repeats` timed calls. Prints the measured speed-up next to the structured FLOP ratio
(dense / structured FLOPs per example, `accounting.flops_per_example`), and as its last line one
JSON object.

  JAX_PLATFORMS=cpu python -m benchmarks.pruned_speedup                 # CI-sized models
  JAX_PLATFORMS=cpu python -m benchmarks.pruned_speedup --full --batch=64 --models=resnet18

CI sizes are the configs' `:small` models on 28x28x1 inputs (LSTM: 32 units, 80 steps); `--full`
uses the paper's: the FEMNIST CNN (64/128 filters, 2048 neurons) on 28x28x1, ResNet-18 and
EfficientNet-B3 on 32x32x3, the 256-unit Shakespeare LSTM on 80 tokens.
"""

from __future__ import annotations

import json

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from autoflip_jax import accounting, layout, masks, models, shrink
from benchmarks import timing

_MODELS = flags.DEFINE_list('models', list(models.MODELS), 'Models to time.')
_FULL = flags.DEFINE_bool('full', False, 'Paper-sized models instead of the CI-sized ones.')
_TP = flags.DEFINE_float('tp', 0.5, 'Unstructured guidance quantile (global).')
_STRUCTURED_TP = flags.DEFINE_float('structured_tp', 0.5,
                                    'Units below this quantile of unit guidance are removed.')
_THRESHOLD = flags.DEFINE_float('structured_threshold', 1.0,
                                'Units with this share of incoming weights pruned are removed.')
_BATCH = flags.DEFINE_integer('batch', 32, 'Examples per forward + backward pass.')
_REPEATS = flags.DEFINE_integer('repeats', 10, 'Timed calls (median reported).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the params, the guidance and the batch.')

# name -> (CI model_config, full model_config, CI input shape, full input shape, classes)
SETTINGS = {
    'cnn': ({'channels': (8, 16), 'hidden': 64}, {'channels': (64, 128), 'hidden': 2048},
            (28, 28, 1), (28, 28, 1), 62),
    'resnet18': ({'width': 8}, {'width': 64}, (28, 28, 1), (32, 32, 3), 10),
    'efficientnet_b3': ({'width_mult': 0.25, 'depth_mult': 0.25}, {}, (28, 28, 1), (32, 32, 3),
                        100),
    'lstm': ({'hidden': (32, 32)}, {}, (80,), (80,), 80),
}


def _grad_fn(model):
  def loss(params, x, y):
    logits = model.apply({'params': params}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  return layout.jit(jax.value_and_grad(loss))  # compiled as the engine compiles its rounds


def run_one(name: str, full: bool, rng: np.random.Generator) -> dict:
  """Builds, masks, shrinks and times one model; returns its row."""
  ci_config, full_config, ci_shape, full_shape, classes = SETTINGS[name]
  shape = full_shape if full else ci_shape
  config = ml_collections.ConfigDict({'model': name,
                                      'model_config': full_config if full else ci_config})
  model = models.get_model(config, classes)
  if name == 'lstm':
    x = rng.integers(0, classes, (_BATCH.value,) + shape).astype(np.int32)
  else:
    x = rng.normal(size=(_BATCH.value,) + shape).astype(np.float32)
  y = rng.integers(0, classes, (_BATCH.value,)).astype(np.int32)
  params = jax.jit(model.init)(jax.random.key(_SEED.value), x[:1])['params']
  guidance = jax.tree.map(lambda p: rng.uniform(size=p.shape).astype(np.float32), params)
  mask = jax.jit(lambda g: masks.hybrid_mask(
      g, _TP.value, model.units(), structured_threshold=_THRESHOLD.value,
      structured_tp=_STRUCTURED_TP.value))(guidance)
  small = shrink.shrink(model, params, mask)

  positions = accounting.kernel_positions(model.apply, params, shape, x.dtype)
  flops = {mode: accounting.flops_per_example(params, mask, positions, mode)
           for mode in ('dense', 'structured', 'sparse')}
  grad_dense, grad_small = _grad_fn(model), _grad_fn(small.model)
  dense_params = masks.apply_mask(params, mask)  # same cost as dense: zeros are still multiplied
  small_params = jax.tree.map(jnp.asarray, small.params)
  compile_dense, dense_s = timing.time_call(lambda: grad_dense(dense_params, x, y),
                                            _REPEATS.value)
  compile_small, small_s = timing.time_call(lambda: grad_small(small_params, x, y),
                                            _REPEATS.value)
  units = masks.unit_counts(mask, model.units())
  return dict(
      model=name, full=full, input_shape=list(shape), batch=_BATCH.value,
      params_dense=accounting.total_params(params),
      params_shrunk=accounting.total_params(small.params),
      params_kept=accounting.kept_params(mask),
      units_kept=sum(k for k, _ in units.values()), units_total=sum(t for _, t in units.values()),
      flops_dense=flops['dense'], flops_structured=flops['structured'],
      flops_sparse=flops['sparse'], structured_flops_ratio=flops['dense'] / flops['structured'],
      dense_ms=1e3 * dense_s, shrunk_ms=1e3 * small_s, measured_speedup=dense_s / small_s,
      first_call_dense_s=compile_dense, first_call_shrunk_s=compile_small)


def main(argv):
  del argv
  rng = np.random.default_rng(_SEED.value)
  rows = []
  print(f'{"model":16s} {"params dense -> shrunk":>24s} {"units":>11s} '
        f'{"FLOPs/ex dense -> structured":>30s} {"FLOP ratio":>10s} {"dense ms":>9s} '
        f'{"shrunk ms":>9s} {"speed-up":>8s}')
  for name in _MODELS.value:
    row = run_one(name, _FULL.value, rng)
    rows.append(row)
    print(f'{name:16s} {row["params_dense"]:>11,d} -> {row["params_shrunk"]:<10,d} '
          f'{row["units_kept"]:>5d}/{row["units_total"]:<5d} '
          f'{row["flops_dense"]:>14,d} -> {row["flops_structured"]:<13,d} '
          f'{row["structured_flops_ratio"]:>9.2f}x {row["dense_ms"]:>9.2f} '
          f'{row["shrunk_ms"]:>9.2f} {row["measured_speedup"]:>7.2f}x', flush=True)
  print(f'backend: {jax.default_backend()} ({jax.devices()[0].device_kind}), tp={_TP.value}, '
        f'structured_tp={_STRUCTURED_TP.value}, forward + backward, median of '
        f'{_REPEATS.value}, first call excluded')
  print(json.dumps(dict(backend=jax.default_backend(), device=jax.devices()[0].device_kind,
                        tp=_TP.value, structured_tp=_STRUCTURED_TP.value,
                        structured_threshold=_THRESHOLD.value, repeats=_REPEATS.value,
                        rows=rows)))


if __name__ == '__main__':
  app.run(main)
