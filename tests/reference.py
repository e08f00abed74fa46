"""NumPy references for the graph network and its learning signals, and hand-written rules.

The references recompute in float64 NumPy what the library computes in JAX, from the
documented definitions only: a layered MLP forward pass, the output error ``target - a``,
the hidden errors of each feedback pathway, and the weight change of every edge.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax.numpy as jnp
import numpy as np

# Kind of every registered feature, as documented in neuroevo/features.py.
FEATURE_KINDS = {
    "pre": "pre",
    "post": "post",
    "post_state": "post",
    "weight": "edge",
    "error": "post",
    "reward": "post",
    "in_mean": "post",
    "in_norm": "post",
    "out_mean": "pre",
    "out_norm": "pre",
    "in_max": "post",
    "out_max": "pre",
    "reward": "post",
    "pre_trace": "pre",
    "post_trace": "post",
    "edge_age": "edge",
    "pre_spike_count": "pre",
    "post_spike_count": "post",
    "pre_first_spike": "pre",
    "post_first_spike": "post",
    "pre_spike_trace": "pre",
    "post_spike_trace": "post",
    "stdp_ltp": "edge",
    "stdp_ltd": "edge",
}


def activation(name: str, h: np.ndarray) -> np.ndarray:
    if name == "tanh":
        return np.tanh(h)
    if name == "relu":
        return np.maximum(h, 0.0)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-h))
    if name == "identity":
        return h
    if name == "softmax":
        exponentials = np.exp(h - h.max())
        return exponentials / exponentials.sum()
    raise ValueError(f"no reference for activation {name!r}")


def activation_derivative(name: str, h: np.ndarray) -> np.ndarray:
    if name == "tanh":
        return 1.0 - np.tanh(h) ** 2
    if name == "relu":
        return (h > 0).astype(np.float64)
    if name == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-h))
        return s * (1.0 - s)
    if name == "identity":
        return np.ones_like(h)
    raise ValueError(f"no reference derivative for activation {name!r}")


def layer_groups(topology) -> list[int]:
    """Return the group index of each layer of a layered topology: input, hidden layers, output."""
    return [topology.input_group, *topology.hidden_groups, topology.output_group]


def block_index(topology, src: int, dst: int) -> int | None:
    for block, pair in enumerate(topology.blocks):
        if pair == (src, dst):
            return block
    return None


def forward(topology, weights, x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Run the MLP forward pass of a layered topology and return the states and activations per layer."""
    groups = layer_groups(topology)
    x = np.asarray(x, np.float64)
    states, activations = [x], [x]
    for layer in range(1, len(groups)):
        src, dst = groups[layer - 1], groups[layer]
        h = np.asarray(weights[block_index(topology, src, dst)], np.float64) @ activations[-1]
        if topology.bias_group is not None:
            h = h + np.asarray(weights[block_index(topology, topology.bias_group, dst)], np.float64)[:, 0]
        states.append(h)
        activations.append(activation(topology.activations[dst], h))
    return states, activations


def example_loss(topology, states: list[np.ndarray], activations: list[np.ndarray], label: int) -> float:
    """Return the cross-entropy of the output states for softmax outputs, else the squared error to the one-hot target."""
    if topology.activations[topology.output_group] == "softmax":
        logits = states[-1]
        top = logits.max()
        return float(top + np.log(np.exp(logits - top).sum()) - logits[label])
    target = np.eye(topology.n_outputs)[label]
    return float(np.sum((activations[-1] - target) ** 2))


def hidden_errors(topology, feedback: str, feedback_matrices, states: list[np.ndarray], error_out: np.ndarray, weights=None) -> list[np.ndarray]:
    """Compute the error of every layer: zero at the input, the pathway's error at hidden layers, ``error_out`` at the output.

    ``weights`` (per block) are needed only by the ``symmetric`` pathway.
    """
    groups = layer_groups(topology)
    errors = [np.zeros_like(state) for state in states]
    errors[-1] = error_out
    for layer in range(len(groups) - 2, 0, -1):
        group = groups[layer]
        if feedback == "none":
            continue
        if feedback == "broadcast":
            errors[layer] = np.full(states[layer].shape, np.sqrt(np.mean(error_out**2)))
        elif feedback == "random_feedback":
            matrix = np.asarray(feedback_matrices[block_index(topology, group, groups[layer + 1])], np.float64)
            errors[layer] = activation_derivative(topology.activations[group], states[layer]) * (matrix.T @ errors[layer + 1])
        elif feedback == "direct_random_feedback":
            matrix = np.asarray(feedback_matrices[group], np.float64)  # (n_group, n_out)
            errors[layer] = activation_derivative(topology.activations[group], states[layer]) * (matrix @ error_out)
        elif feedback == "symmetric":
            matrix = np.asarray(weights[block_index(topology, group, groups[layer + 1])], np.float64)
            errors[layer] = activation_derivative(topology.activations[group], states[layer]) * (matrix.T @ errors[layer + 1])
        else:
            raise ValueError(f"no reference for feedback {feedback!r}")
    return errors


@dataclasses.dataclass
class StepReference:
    weights: list[np.ndarray]  # per block, after the update
    loss: float  # loss of the presented example before the update
    correct: bool  # prediction before the update was right
    traces: dict  # group -> activation trace after this step


EdgeRule = Callable[[int, int, int, dict], float]  # (block, i, j, per-edge quantities) -> dw


def plastic_step(
    topology,
    weights,
    feedback: str,
    feedback_matrices,
    x,
    label: int,
    edge_rule: EdgeRule,
    traces: dict | None = None,
    trace_decay: float = 0.8,
    age: int = 0,
) -> StepReference:
    """One presentation and update, looping over every edge of every block.

    ``edge_rule`` receives a dict of the edge's quantities: ``pre`` (a_j), ``post`` (a_i),
    ``post_state`` (h_i), ``error`` (e_i), ``weight`` (w_ij), the neighbour-weight
    statistics ``in_mean``, ``in_norm``, ``in_max`` (over every edge into i) and ``out_mean``,
    ``out_norm``, ``out_max`` (over every edge out of j), ``reward`` (0 on labelled
    examples), ``pre_trace`` and ``post_trace`` (the activation traces ``traces`` per group,
    zero when omitted, after ``t <- trace_decay * t + (1 - trace_decay) * a``) and
    ``edge_age`` (``age``, the number of earlier steps).
    """
    weights = [np.asarray(w, np.float64) for w in weights]
    states, activations = forward(topology, weights, x)
    target = np.eye(topology.n_outputs)[label]
    error_out = target - activations[-1]
    errors = hidden_errors(topology, feedback, feedback_matrices, states, error_out, weights)

    # Per-group quantities. The bias group is clamped to 1 and has zero error.
    group_of_layer = {group: layer for layer, group in enumerate(layer_groups(topology))}

    def quantity(group: int, name: str) -> np.ndarray:
        if group == topology.bias_group:
            return {"activation": np.ones(1), "state": np.ones(1), "error": np.zeros(1)}[name]
        layer = group_of_layer[group]
        return {"activation": activations[layer], "state": states[layer], "error": errors[layer]}[name]

    traces = traces or {group: np.zeros(size) for group, size in enumerate(topology.group_sizes)}
    traces = {group: trace_decay * traces[group] + (1.0 - trace_decay) * quantity(group, "activation") for group in traces}

    incoming = {group: [] for group in range(len(topology.group_sizes))}
    outgoing = {group: [] for group in range(len(topology.group_sizes))}
    for block, (src, dst) in enumerate(topology.blocks):
        incoming[dst].append(weights[block])
        outgoing[src].append(weights[block].T)

    def row_statistics(blocks: list[np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not blocks:
            return np.zeros(size), np.zeros(size), np.zeros(size)
        rows = np.concatenate(blocks, axis=1)
        return rows.mean(axis=1), np.sqrt((rows**2).sum(axis=1)), np.abs(rows).max(axis=1)

    new_weights = []
    for block, (src, dst) in enumerate(topology.blocks):
        in_mean, in_norm, in_max = row_statistics(incoming[dst], topology.group_sizes[dst])
        out_mean, out_norm, out_max = row_statistics(outgoing[src], topology.group_sizes[src])
        updated = weights[block].copy()
        n_dst, n_src = updated.shape
        for i in range(n_dst):
            for j in range(n_src):
                edge = {
                    "pre": quantity(src, "activation")[j],
                    "post": quantity(dst, "activation")[i],
                    "post_state": quantity(dst, "state")[i],
                    "error": quantity(dst, "error")[i],
                    "weight": weights[block][i, j],
                    "in_mean": in_mean[i],
                    "in_norm": in_norm[i],
                    "out_mean": out_mean[j],
                    "out_norm": out_norm[j],
                    "in_max": in_max[i],
                    "out_max": out_max[j],
                    "reward": 0.0,
                    "pre_trace": traces[src][j],
                    "post_trace": traces[dst][i],
                    "edge_age": float(age),
                }
                updated[i, j] += edge_rule(block, i, j, edge)
        new_weights.append(updated)

    loss = example_loss(topology, states, activations, label)
    correct = int(np.argmax(activations[-1])) == label
    return StepReference(new_weights, loss, correct, traces)


def query_scores(topology, weights, query_x, query_y) -> tuple[float, float]:
    """Return the accuracy and mean loss on a query set."""
    correct, losses = [], []
    for x, label in zip(np.asarray(query_x), np.asarray(query_y)):
        states, activations = forward(topology, weights, x)
        correct.append(int(np.argmax(activations[-1])) == int(label))
        losses.append(example_loss(topology, states, activations, int(label)))
    return float(np.mean(correct)), float(np.mean(losses))


# Hand-written rules following the protocol of neuroevo/rules/base.py -----------------------


@dataclasses.dataclass(frozen=True)
class DeltaRule:
    """Delta rule ``dw_ij = eta * e_i * a_j``, whose only parameter is the learning rate ``eta``."""

    eta: float = 0.5
    feature_names: tuple[str, ...] = ("pre", "error")

    def init(self, key) -> dict:
        return {"eta": jnp.float32(self.eta)}

    def init_state(self, shape: tuple[int, int]) -> tuple:
        return ()

    def apply(self, params, features, state):
        return params["eta"] * features.post[..., 0] * features.pre[..., 0], state


TRACE_COUNTS = {"SwitchRule": 0}


@dataclasses.dataclass(frozen=True)
class SwitchRule:
    """Delta rule ``dw = eta * exp(gain) * e_i * a_j`` that outputs NaN wherever ``switch > 0``.

    Its ``apply`` runs Python only while JAX traces it, so ``TRACE_COUNTS["SwitchRule"]``
    counts traces of every function that applies the rule.
    """

    eta: float = 0.3
    switch: float = 0.0
    feature_names: tuple[str, ...] = ("pre", "error")

    def init(self, key) -> dict:
        return {"switch": jnp.float32(self.switch), "gain": jnp.float32(0.0)}

    def init_state(self, shape: tuple[int, int]) -> tuple:
        return ()

    def apply(self, params, features, state):
        TRACE_COUNTS["SwitchRule"] += 1
        dw = self.eta * jnp.exp(params["gain"]) * features.post[..., 0] * features.pre[..., 0]
        return jnp.where(params["switch"] > 0, jnp.nan, dw), state
