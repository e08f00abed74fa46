"""Learning signals: the output error and the feedback pathways that carry it to hidden neurons.

Output neurons receive ``e = target - a`` (for softmax outputs this is the negative gradient
of the cross-entropy with respect to the output states). Hidden neurons receive, by pathway:

- ``none``: zero error;
- ``broadcast``: the same scalar for every hidden neuron, the root-mean-square output error
  ``||e_out|| / sqrt(n_out)``, an unsigned global error signal (for softmax outputs the signed
  mean is always zero, so the magnitude is what a broadcast can carry);
- ``random_feedback``: feedback alignment (Lillicrap et al. 2016, "Random synaptic feedback
  weights support error backpropagation for deep learning"): layer by layer from the output,
  ``e_j = act'(h_j) * sum_blocks (B^T e_dst)_j`` with a fixed random matrix ``B`` per block,
  drawn fresh for every lifetime.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from neuroevo.graph import Topology
from neuroevo.neurons import activation_derivative

FEEDBACK_PATHWAYS = ("none", "broadcast", "random_feedback")

FeedbackMatrices = tuple[jax.Array | None, ...]  # per block: (n_dst, n_src) or None


def _carries_feedback(topology: Topology, block: int) -> bool:
    src, _ = topology.blocks[block]
    return src in topology.hidden_groups


def init_feedback(key: jax.Array, topology: Topology, feedback: str) -> FeedbackMatrices:
    """Draw the fixed random feedback matrices of one lifetime (``None`` where unused)."""
    if feedback != "random_feedback":
        return tuple(None for _ in topology.blocks)
    keys = jax.random.split(key, len(topology.blocks))
    matrices = []
    for block in range(len(topology.blocks)):
        if not _carries_feedback(topology, block):
            matrices.append(None)
            continue
        n_dst, n_src = topology.block_shape(block)
        matrices.append(jax.random.normal(keys[block], (n_dst, n_src), jnp.float32) / jnp.sqrt(jnp.float32(n_dst)))
    return tuple(matrices)


def output_error(target: jax.Array, output_activation: jax.Array) -> jax.Array:
    """``target - a`` at the output neurons (n_out,)."""
    return target - output_activation


def neuron_errors(
    topology: Topology,
    feedback: str,
    feedback_matrices: FeedbackMatrices,
    states: tuple[jax.Array, ...],
    error_out: jax.Array,
) -> tuple[jax.Array, ...]:
    """Error of every group: output error at the output, the pathway's error at hidden groups."""
    errors = [jnp.zeros((size,), jnp.float32) for size in topology.group_sizes]
    errors[topology.output_group] = error_out

    if feedback == "broadcast":
        rms = jnp.sqrt(jnp.mean(error_out**2))
        for group in topology.hidden_groups:
            errors[group] = jnp.full((topology.group_sizes[group],), rms)
    elif feedback == "random_feedback":
        # Later layers first, so each hidden group sees the final error of the groups it feeds.
        for group in reversed(topology.hidden_groups):
            incoming = jnp.zeros((topology.group_sizes[group],), jnp.float32)
            for block, (src, dst) in enumerate(topology.blocks):
                if src == group:
                    incoming = incoming + feedback_matrices[block].T @ errors[dst]
            errors[group] = activation_derivative(topology.activations[group], states[group]) * incoming
    elif feedback != "none":
        raise ValueError(f"unknown feedback pathway {feedback!r}; use one of {', '.join(FEEDBACK_PATHWAYS)}")
    return tuple(errors)
