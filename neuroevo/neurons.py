"""Rate-neuron activation functions ``a = act(h)``, selected by name."""

from __future__ import annotations

import jax
import jax.numpy as jnp

ACTIVATIONS = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "identity": lambda h: h,
    # Softmax acts on a whole group of neurons (the output layer), not on one neuron.
    "softmax": lambda h: jax.nn.softmax(h, axis=-1),
}


def activate(name: str, h: jax.Array) -> jax.Array:
    """Apply the activation ``name`` to states ``h`` of shape (..., n_neurons)."""
    return ACTIVATIONS[name](h)


def activation_derivative(name: str, h: jax.Array) -> jax.Array:
    """Elementwise derivative ``act'(h)``; for softmax, the diagonal of its Jacobian."""
    if name == "softmax":
        a = jax.nn.softmax(h, axis=-1)
        return a * (1.0 - a)
    return jax.vmap(jax.grad(ACTIVATIONS[name]))(h.reshape(-1)).reshape(h.shape)
