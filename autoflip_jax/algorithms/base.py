"""The algorithm interface: what every federated algorithm is, in the optax spirit.

An `Algorithm` is a few pure functions over one typed state that the runner (`train.py`)
threads through the rounds and checkpoints whole:

* `init(context, params0, rng, tps) -> [Start]`: the work before round 1 (AutoFLIP's
  exploration, PruneFL's initial pruning): the first mask, the algorithm's own arrays
  (`Start.state`, kept between rounds), the cost of that work and its statistics (`info`). One
  `Start` per threshold of `tps`, for the algorithms that sweep Tp (`sweeps_tp`; the others get
  `(config.tp,)` and return one).
* `round_mask(state, client_ids, num_examples) -> mask`, optional: the mask of a round, built on
  the device inside the jitted round from the algorithm's state and the round's cohort
  (AutoFLIP's per-round guidance).
* `update(round, params, mask, metrics, state) -> (new mask or None, state)`, optional: the
  host's step after a round (PruneFL's and EFLPrune's reconfigurations).
* `state_like(context, params0)`: the shapes of `Start.state` (ShapeDtypeStructs, or None when
  the algorithm keeps nothing), to restore a checkpoint without redoing `init`.

`Context` is what an algorithm may read: the resolved run (config, model, units, the kernel
positions, the client packer, the chunk layout), the summary rows of the algorithms run before
it in the same invocation (the controls read AutoFLIP's kept count there) and, with
`config.exploration_chain`, the seed's chained exploration, run once for every algorithm. An algorithm
module imports only this module and the library below it (masks, exploration, local, accounting);
the registry (`algorithms/__init__.py`) sits above the modules.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

PyTree = Any


class Start(NamedTuple):
  """What an algorithm's `init` hands the runner for one variant."""
  mask: PyTree
  state: PyTree = None      # the algorithm's arrays between rounds (None: nothing)
  bytes_up: int = 0         # the work before round 1: bytes every client sent ...
  bytes_down: int = 0       # ... and received
  seconds: float = 0.0      # its wall time
  info: dict = {}           # its statistics, copied into the summary row
  params: PyTree = None     # the global model of round 1, before its mask (None: θ0; AutoFLIP's
                            # `exploration_chain` starts from the chain's last model)


@dataclasses.dataclass(frozen=True)
class Context:
  """The resolved run an algorithm reads (see the module docstring)."""
  config: Any
  apply_fn: Callable
  units: Sequence[Any]
  positions: dict
  pack: Callable            # pack(ids) -> (ClientData, num_examples) on the device
  clients_per_chunk: int    # the exploration's chunk layout (`federated.resolve_chunk`,
                            # `memory.fit`)
  seed: int = 0             # the variant's training seed (θ0, explorers, cohorts follow it)
  earlier: Sequence[dict] = ()  # summary rows of the algorithms already run in this invocation
  chain: Callable | None = None  # chain() -> (start, Chain, seconds): the seed's chained
                                 # exploration, run once (`config.exploration_chain`)

  def earlier_row(self, algorithm: str, seed: int) -> dict | None:
    """The summary row of `algorithm` for `seed` run earlier in this invocation, if any."""
    return next((r for r in self.earlier
                 if r['algorithm'] == algorithm and r.get('seed') == seed), None)


class Algorithm(NamedTuple):
  """An algorithm on the round engine (see the module docstring)."""
  name: str
  init: Callable[..., list[Start]]
  state_like: Callable[[Context, PyTree], PyTree] = lambda context, params0: None
  round_mask: Callable | None = None
  update: Callable | None = None
  track_grad_sq: bool = False   # the round returns the cohort's mean squared gradients
  sweeps_tp: bool = False       # `config.tp_sweep` applies (one variant per threshold)

