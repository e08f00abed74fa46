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
- ``direct_random_feedback``: direct feedback alignment (Nøkland 2016, "Direct Feedback
  Alignment Provides Learning in Deep Neural Networks"): every hidden group receives the
  output error directly, ``e_j = act'(h_j) * (B e_out)_j``, with a fixed random matrix ``B``
  of shape (n_group, n_out) per hidden group, drawn fresh for every lifetime.
- ``symmetric``: backpropagation's pathway, layer by layer from the output,
  ``e_j = act'(h_j) * sum_blocks (W^T e_dst)_j`` with the network's current weights ``W``. For
  softmax outputs the hidden errors are then the negative gradient of the cross-entropy with
  respect to the hidden states. Other outputs use the squared error, whose negative gradient
  at the output states is ``2 act'(h_out) (target - a)``, so their hidden errors differ from
  the gradient by that factor (for identity outputs they are half of it).

Reinforcement tasks broadcast a scalar instead: the reward ``r_t`` itself, or the
reward-prediction error ``delta_t = r_t - b_t`` against a running-average baseline
``b_{t+1} = d * b_t + (1 - d) * r_t``, an average-reward baseline as in the gradient bandit
algorithm of Sutton and Barto, "Reinforcement Learning: An Introduction" (2nd edition 2018).
``features.neuron_contexts(..., reward=...)`` gives every neuron the same value, which rules
read as the ``reward`` feature.

Errors travel back only through forward blocks (from a group to a later one in the update
order). In a recurrent graph, blocks from a group to itself or to an earlier group carry
no error, so ``symmetric`` is then backpropagation truncated to the forward path, not
backpropagation through time. An edge-list block sends errors back by a segment sum over
its source indices, the transpose of its forward pass.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from neuroevo.graph import FixedMask, Topology, Weights, transposed_matvec
from neuroevo.neurons import activation_derivative

FEEDBACK_PATHWAYS = ("none", "broadcast", "random_feedback", "direct_random_feedback", "symmetric")

# random_feedback: one array per block, shaped like its weights. direct_random_feedback: one
# (n_group, n_out) matrix per group. None where a pathway uses no matrix.
FeedbackMatrices = tuple[jax.Array | None, ...]


def _carries_feedback(topology: Topology, block: int) -> bool:
    """True for a forward block out of a hidden group: the blocks that send errors back."""
    src, dst = topology.blocks[block]
    order = topology.update_order
    return src in topology.hidden_groups and order.index(src) < order.index(dst)


def init_feedback(key: jax.Array, topology: Topology, feedback: str) -> FeedbackMatrices:
    """Draw the fixed random feedback matrices of one lifetime (``None`` where unused)."""
    if feedback == "direct_random_feedback":
        return _init_direct_feedback(key, topology)
    if feedback != "random_feedback":
        return tuple(None for _ in topology.blocks)
    keys = jax.random.split(key, len(topology.blocks))
    matrices = []
    for block in range(len(topology.blocks)):
        if not _carries_feedback(topology, block):
            matrices.append(None)
            continue
        # Entries have variance 1 / (mean out-degree), n_dst for a full block, so B^T e keeps the scale of e.
        _, n_src = topology.block_shape(block)
        connectivity = topology.block_connectivity(block)
        mask = connectivity.mask if isinstance(connectivity, FixedMask) else np.ones(topology.edge_shape(block), np.float32)
        out_degree = max(float(mask.sum()) / n_src, 1.0)
        matrix = jax.random.normal(keys[block], mask.shape, jnp.float32) / jnp.sqrt(jnp.float32(out_degree))
        matrices.append(matrix * mask)
    return tuple(matrices)


def _init_direct_feedback(key: jax.Array, topology: Topology) -> FeedbackMatrices:
    """Draw one (n_group, n_out) matrix per hidden group, entries N(0, 1 / n_out)."""
    keys = jax.random.split(key, len(topology.group_sizes))
    n_out = topology.n_outputs
    matrices = []
    for group, size in enumerate(topology.group_sizes):
        if group not in topology.hidden_groups:
            matrices.append(None)
            continue
        matrices.append(jax.random.normal(keys[group], (size, n_out), jnp.float32) / jnp.sqrt(jnp.float32(n_out)))
    return tuple(matrices)


def output_error(target: jax.Array, output_activation: jax.Array) -> jax.Array:
    """``target - a`` at the output neurons (n_out,)."""
    return target - output_activation


def neuron_errors(
    topology: Topology,
    feedback: str,
    feedback_matrices: FeedbackMatrices,
    weights: Weights,
    states: tuple[jax.Array, ...],
    error_out: jax.Array,
) -> tuple[jax.Array, ...]:
    """Error of every group: output error at the output, the pathway's error at hidden groups.

    ``weights`` are the network's current weights; only the ``symmetric`` pathway reads them.
    """
    errors = [jnp.zeros((size,), jnp.float32) for size in topology.group_sizes]
    errors[topology.output_group] = error_out

    if feedback == "broadcast":
        rms = jnp.sqrt(jnp.mean(error_out**2))
        for group in topology.hidden_groups:
            errors[group] = jnp.full((topology.group_sizes[group],), rms)
    elif feedback in ("random_feedback", "symmetric"):
        # random_feedback sends errors back through fixed random matrices, symmetric through
        # the forward weights. Later layers come first, so each hidden group receives the
        # final error of the groups it feeds.
        matrices = feedback_matrices if feedback == "random_feedback" else weights
        for group in reversed(topology.hidden_groups):
            incoming = jnp.zeros((topology.group_sizes[group],), jnp.float32)
            for block, (src, dst) in enumerate(topology.blocks):
                if src == group and _carries_feedback(topology, block):
                    incoming = incoming + transposed_matvec(topology, block, matrices[block], errors[dst])
            errors[group] = activation_derivative(topology.activations[group], states[group]) * incoming
    elif feedback == "direct_random_feedback":
        for group in topology.hidden_groups:
            incoming = feedback_matrices[group] @ error_out
            errors[group] = activation_derivative(topology.activations[group], states[group]) * incoming
    elif feedback != "none":
        raise ValueError(f"unknown feedback pathway {feedback!r}; use one of {', '.join(FEEDBACK_PATHWAYS)}")
    return tuple(errors)


class RewardBaseline(NamedTuple):
    """Running average of the rewards a network has received in its lifetime."""

    mean: jax.Array  # () baseline b_t
    decay: jax.Array  # () d in b <- d * b + (1 - d) * r, in [0, 1)


def init_reward_baseline(decay: float | jax.Array, initial: float | jax.Array = 0.0) -> RewardBaseline:
    """Baseline at the start of a lifetime: ``b_0 = initial``."""
    return RewardBaseline(mean=jnp.asarray(initial, jnp.float32), decay=jnp.asarray(decay, jnp.float32))


def reward_prediction_error(baseline: RewardBaseline, reward: jax.Array) -> tuple[jax.Array, RewardBaseline]:
    """Return ``r - b`` (against the baseline before this reward) and the updated baseline."""
    reward = jnp.asarray(reward, jnp.float32)
    error = reward - baseline.mean
    mean = baseline.decay * baseline.mean + (1.0 - baseline.decay) * reward
    return error, baseline._replace(mean=mean)

