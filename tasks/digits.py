"""Few-shot online classification of scikit-learn's bundled 8x8 handwritten digits.

1797 grayscale images of 8x8 pixels (UCI optical digits), shipped with scikit-learn, so
nothing is downloaded. Pixel values 0..16 are scaled to [0, 1]. Meta-train lifetimes draw
from classes 0-4 and meta-test lifetimes from classes 5-9 by default.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from sklearn.datasets import load_digits

from neuroevo.errors import ConfigError
from neuroevo.tasks.fewshot import ClassPools, FewShotClassification, build_pools, check_split_sizes, validate_fewshot_sizes

SPLITS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class DigitsConfig:
    """Options of the digits task (config section ``task`` with ``name: digits``)."""

    n_way: int = 5
    k_shot: int = 10
    n_query: int = 20  # query images per class
    train_classes: tuple[int, ...] = (0, 1, 2, 3, 4)
    test_classes: tuple[int, ...] = (5, 6, 7, 8, 9)
    query_fraction: float = 0.5  # share of each class's images held out as query images
    split_seed: int = 0  # seed of the fixed support/query division

    def validate(self) -> None:
        validate_fewshot_sizes(self)
        for name in ("train_classes", "test_classes"):
            classes = getattr(self, name)
            if len(classes) < 2:
                raise ConfigError(f"task.{name}={list(classes)} lists fewer than 2 classes; list at least n_way={self.n_way} digits")
            bad = [label for label in classes if not 0 <= label <= 9]
            if bad:
                raise ConfigError(f"task.{name} contains {bad}, but digits has classes 0-9")
            if len(set(classes)) != len(classes):
                raise ConfigError(f"task.{name}={list(classes)} repeats a class")
        overlap = sorted(set(self.train_classes) & set(self.test_classes))
        if overlap:
            raise ConfigError(f"task.train_classes and task.test_classes share {overlap}; meta-test classes must be held out")


@dataclasses.dataclass(frozen=True)
class DigitsTask(FewShotClassification):
    """5-way by default; see :class:`~neuroevo.tasks.fewshot.FewShotClassification`."""

    config: DigitsConfig = DigitsConfig()

    inputs_in_unit_interval = True  # pixel values 0..16 divided by 16

    @classmethod
    def from_config(cls, config: DigitsConfig) -> DigitsTask:
        task = cls(n_inputs=64, n_way=config.n_way, k_shot=config.k_shot, n_query=config.n_query, config=config)
        for split in SPLITS:
            check_split_sizes("task", split, task.data(split), config.n_way, config.k_shot, config.n_query)
        return task

    @property
    def image_shape(self) -> tuple[int, int]:
        """(height, width) of the row-major input images."""
        return (8, 8)

    def data(self, split: str) -> ClassPools:
        """Support and query pools of ``split`` ("train" = meta-train, "test" = meta-test)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
        digits = load_digits()
        classes = self.config.train_classes if split == "train" else self.config.test_classes
        images = digits.data.astype(np.float32) / 16.0
        return build_pools(images, digits.target, classes, self.config.query_fraction, self.config.split_seed)
