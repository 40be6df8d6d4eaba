"""Gradient checkpointing: a part of the network whose activations are
recomputed in the backward pass instead of kept from the forward pass.

Keras's `keras.remat` is the mechanism (`tf.recompute_grad` on
TensorFlow, `jax.checkpoint` on JAX). `keras.RematScope` would wrap each
layer's call on its own, chosen when the layer is created; a Transformer
block is six layers wired by `BertNetwork.block`, so the whole block is
wrapped instead, only in training passes. What `keras.remat` does not do
for a part built of Keras layers is keep their random state straight.
Dropout draws its mask from a `SeedGenerator`, whose state the forward pass
advances:

- TensorFlow recomputes by calling the part again, which would read the
  advanced state, draw another mask (wrong gradients) and advance the
  state once more;
- JAX traces the part into its own function, and a state advanced inside
  it would leak that function's tracers into the rest of the step.

So the part runs as a pure function of its inputs and of its layers'
non-trainable state (the seed states): the state goes in as arguments,
its new value comes out as results and is written back outside, and the
part leaves the state as it found it. A recomputation then draws the
masks of the forward pass, and the random stream advances exactly as
without checkpointing: the gradients are the same to round-off.
"""

from collections.abc import Callable
from collections.abc import Sequence

import keras


def checkpointed(fn: Callable, layers: Sequence[keras.Layer]) -> Callable:
    """`fn(*tensors)`, recomputed in the backward pass (`keras.remat`).

    `fn` returns a tensor or a nest of tensors. `layers` are the layers
    `fn` calls: their non-trainable variables (the dropout seed states)
    are threaded through as described above.
    """
    states = [v for layer in layers for v in layer.non_trainable_variables]
    structure = []

    def pure(*flat):
        cut = len(flat) - len(states)
        args, values = flat[:cut], flat[cut:]
        found = [_snapshot(v) for v in states]
        _assign(states, values)
        out = fn(*args)
        new = [_snapshot(v) for v in states]
        _assign(states, found)
        structure[:] = [out]
        return (*keras.tree.flatten(out), *new)

    recomputed = keras.remat(pure)

    def call(*args):
        flat = recomputed(*args, *[_snapshot(v) for v in states])
        cut = len(flat) - len(states)
        _assign(states, flat[cut:])
        return keras.tree.pack_sequence_as(structure[0], flat[:cut])

    return call


def _snapshot(variable):
    """The variable's value now, in a buffer of its own: on TensorFlow a
    plain read can share the variable's buffer and change with it (as
    Keras's `SeedGenerator.next` does, hence the `* 1`)."""
    return variable.value * 1


def _assign(variables, values):
    for variable, value in zip(variables, values):
        variable.assign(value)
