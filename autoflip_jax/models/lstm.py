"""LEAF's Shakespeare next-character LSTM (Caldas et al. 2018; the paper's Shakespeare model).

Input: int32 token ids `[batch, time]` (LEAF: 80 characters of context, an 80-symbol vocabulary).
An 8-dimensional embedding, two LSTM layers of 256 hidden units, and a dense layer from the last
step's hidden state to the 80 classes: the next character. The reference code's `NextCharLSTM`
(embedding 8, hidden 256, 2 layers).

The LSTM step is written here over explicit fused-gate kernels, scanned over time with
`lax.scan`, so that a hidden unit is a clean structured unit. Layer `l` has
  * `input_kernel` `[in, 4H]` and `recurrent_kernel` `[H, 4H]`, gate blocks `[i | f | g | o]`,
  * `bias` `[4H]`,
and computes, for every step t,
    z_t = x_t W_in + h_{t-1} W_rec + b,   i, f, g, o = split(z_t, 4)
    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g),   h_t = sigmoid(o) * tanh(c_t),
from h_0 = c_0 = 0 (PyTorch's `nn.LSTM` gate order and equations). The input projection of all
steps (without the bias) is one matmul before the scan; the recurrent matmul runs inside it.

Hidden unit u of layer l (`units()`, `Unit(groups=4)`) owns the gate columns {u, H+u, 2H+u, 3H+u}
of both kernels and of the bias, the recurrent kernel's row u and the next layer's input-kernel
row u (the head's row u for the last layer). A removed unit has all its gate pre-activations
zero, so c stays 0 and h = sigmoid(0) * tanh(0) = 0 at every step: removing it is exact.

Tokens may arrive as floats (the padded client arrays are float32); they are cast to int32.
`unroll` is passed to `lax.scan` (XLA's cost analysis counts a loop body once, so the FLOP
cross-check unrolls it).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from autoflip_jax.models.layers import KeptUnits, lecun, unit_width, zero_size_safe
from autoflip_jax.models.units import Unit


class LSTMLayer(nn.Module):
  """One LSTM layer over `[batch, time, in]`, returning every step's hidden state `[b, t, H]`."""
  hidden: int
  unroll: int | bool = 1

  @nn.compact
  def __call__(self, x_btd: jax.Array) -> jax.Array:
    h = self.hidden
    w_in = self.param('input_kernel', lecun, (x_btd.shape[-1], 4 * h))
    w_rec = self.param('recurrent_kernel', zero_size_safe(nn.initializers.orthogonal()), (h, 4 * h))
    bias = self.param('bias', nn.initializers.zeros, (4 * h,))
    z_tbg = jnp.swapaxes(x_btd @ w_in, 0, 1)  # [time, batch, 4H]

    def step(carry, z_bg):
      h_prev, c_prev = carry
      # The bias is added per step, not to z_tbg before the loop: fused into every step's slice
      # of z, XLA would count (and may compute) the whole [time, 4H] add at each step.
      i, f, g, o = jnp.split(z_bg + h_prev @ w_rec + bias, 4, axis=-1)
      c = nn.sigmoid(f) * c_prev + nn.sigmoid(i) * jnp.tanh(g)
      h_new = nn.sigmoid(o) * jnp.tanh(c)
      return (h_new, c), h_new

    zeros = jnp.zeros((x_btd.shape[0], h), z_tbg.dtype)
    _, hs_tbh = jax.lax.scan(step, (zeros, zeros), z_tbg, unroll=self.unroll)
    return jnp.swapaxes(hs_tbh, 0, 1)


class LSTM(nn.Module):
  """Embedding, stacked LSTM layers, dense head on the last step: next-token logits."""
  num_classes: int = 80
  vocab_size: int = 80
  embed: int = 8
  hidden: Sequence[int] = (256, 256)
  unroll: int | bool = 1
  kept_units: KeptUnits = ()

  @nn.compact
  def __call__(self, tokens_bt: jax.Array) -> jax.Array:
    x = nn.Embed(self.vocab_size, self.embed, name='embed')(tokens_bt.astype(jnp.int32))
    for l, h in enumerate(self.hidden):
      x = LSTMLayer(unit_width(self.kept_units, f'lstm{l}', h), self.unroll, name=f'lstm{l}')(x)
    return nn.Dense(self.num_classes, kernel_init=lecun, name='head')(x[:, -1])

  def units(self) -> tuple[Unit, ...]:
    """Every layer's hidden units (see the module docstring)."""
    out = []
    for l in range(len(self.hidden)):
      name = f'lstm{l}'
      nxt = (f'lstm{l + 1}', 'input_kernel') if l + 1 < len(self.hidden) else ('head', 'kernel')
      out.append(Unit(name, (name, 'input_kernel'), ((name, 'bias'),),
                      (((name, 'recurrent_kernel'), 0), (nxt, 0)),
                      producers=((name, 'recurrent_kernel'),), groups=4))
    return tuple(out)
