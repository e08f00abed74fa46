"""Classic local rules with one learning rate ``eta`` as their only parameter, used as baselines.

- ``hebbian``: ``dw = eta * pre * post`` (Hebb 1949), unbounded.
- ``supervised_hebbian``: ``dw = eta * pre * (post + error)``; at output neurons
  ``post + error`` is the target, so this is Hebbian learning with the teacher clamping the
  postsynaptic activity.
- ``oja``: ``dw = eta * post * (pre - post * w)`` (Oja 1982, "Simplified neuron model as a
  principal component analyzer"), Hebbian learning with weight normalisation.
- ``delta``: ``dw = eta * error * pre`` (Widrow and Hoff 1960); for a single softmax layer
  this is exactly online SGD on the cross-entropy.

``eta`` is chosen by a sweep on meta-train lifetimes before a rule is compared on meta-test.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from neuroevo.features import EdgeFeatures

CLASSIC_RULES = ("hebbian", "supervised_hebbian", "oja", "delta")
_FEATURES = ("pre", "post", "weight", "error")


@dataclasses.dataclass(frozen=True)
class ClassicRule:
    """One of :data:`CLASSIC_RULES`; params are ``{"eta": ()}``."""

    kind: str
    feature_names: tuple[str, ...] = _FEATURES

    def __post_init__(self):
        if self.kind not in CLASSIC_RULES:
            raise ValueError(f"unknown classic rule {self.kind!r}; choose one of {', '.join(CLASSIC_RULES)}")

    def init(self, key: jax.Array) -> Any:
        return {"eta": jnp.float32(0.1)}

    def init_state(self, shape: tuple[int, int]) -> tuple:
        return ()

    def apply(self, params: Any, features: EdgeFeatures, state: tuple) -> tuple[jax.Array, tuple]:
        """dw (edge shape) of one block; post columns are (post, error), the pre column is pre."""
        post, error = features.post[..., 0], features.post[..., 1]
        pre = features.pre[..., 0]
        weight = features.edge[..., 0]
        if self.kind == "hebbian":
            dw = pre * post
        elif self.kind == "supervised_hebbian":
            dw = pre * (post + error)
        elif self.kind == "oja":
            dw = post * (pre - post * weight)
        else:
            dw = error * pre
        return params["eta"] * jnp.broadcast_to(dw, features.edge_shape), state

    def apply_dense(self, params: Any, features: jax.Array) -> jax.Array:
        """Reference evaluation on dense features (..., 4) in the order pre, post, weight, error."""
        pre, post, weight, error = (features[..., index] for index in range(4))
        dw = {
            "hebbian": pre * post,
            "supervised_hebbian": pre * (post + error),
            "oja": post * (pre - post * weight),
            "delta": error * pre,
        }[self.kind]
        return params["eta"] * dw
