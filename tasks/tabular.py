"""Options and pools shared by the few-shot tasks on labelled tables of numbers.

A table is a matrix of features (one row per example) with one integer class label per
row. The scikit-learn tables (``iris``, ``wine``, ``breast_cancer``) and the user's own
files (``dataset``) are divided into meta-train and meta-test splits in one of two ways:

- ``split_by: examples``: both splits use every class of the table, and every class's
  examples are divided once (seed ``split_seed``) into a meta-train half and a meta-test
  half. This suits tables with too few classes to hold some out.
- ``split_by: classes``: meta-train uses ``train_classes`` and meta-test the disjoint
  ``test_classes``, all examples of each class, as in the digits task.

Within a split, each class's examples are divided into a support pool and a query pool by
``query_fraction`` (see :func:`~neuroevo.tasks.fewshot.build_pools`), so no example is in
two places.

Features are scaled per column (``scaling``) with statistics of all rows of the table,
whatever their label or split. Meta-test examples therefore contribute to the minimum,
maximum, mean and standard deviation, although never through their labels.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, NamedTuple

import numpy as np

from neuroevo.errors import ConfigError
from neuroevo.tasks.fewshot import (
    ClassPools,
    FewShotClassification,
    build_pools,
    check_split_sizes,
    divide_examples,
    scale_features,
    validate_fewshot_sizes,
)

SPLITS = ("train", "test")


class Table(NamedTuple):
    """Scaled features and integer labels of every example of a table."""

    features: np.ndarray  # (n_examples, n_features) float32
    labels: np.ndarray  # (n_examples,) int64


@dataclasses.dataclass(frozen=True)
class TableOptions:
    """Few-shot sizes, split and scaling options of a table task (config section ``task``)."""

    n_way: int = 2
    k_shot: int = 10
    n_query: int = 10  # query examples per class
    split_by: Literal["examples", "classes"] = "examples"
    train_classes: tuple[int, ...] = ()  # meta-train classes; only with split_by: classes
    test_classes: tuple[int, ...] = ()  # meta-test classes; only with split_by: classes
    query_fraction: float = 0.5  # share of each class's examples in a split held out as query examples
    split_seed: int = 0  # seed of the fixed meta-train/meta-test and support/query divisions
    scaling: Literal["minmax", "standard", "none"] = "minmax"  # minmax maps each feature to [0, 1]

    def validate(self) -> None:
        validate_fewshot_sizes(self)
        if self.split_by == "examples":
            self._validate_no_class_lists()
        else:
            self._validate_class_lists()

    def _validate_no_class_lists(self) -> None:
        for name in ("train_classes", "test_classes"):
            if getattr(self, name):
                raise ConfigError(
                    f"task.{name}={list(getattr(self, name))} is used only with split_by: classes, but split_by is "
                    f"examples, which uses every class in both splits; remove {name} (or set it to []) or set "
                    f"task.split_by=classes"
                )

    def _validate_class_lists(self) -> None:
        for name in ("train_classes", "test_classes"):
            classes = getattr(self, name)
            if not classes:
                raise ConfigError(
                    f"task.{name} is empty, but split_by: classes needs the class labels of each split; "
                    f"list them, e.g. {name}: [0, 1], or set task.split_by=examples"
                )
            if len(set(classes)) != len(classes):
                raise ConfigError(f"task.{name}={list(classes)} repeats a class")
            if self.n_way > len(classes):
                raise ConfigError(
                    f"task.n_way={self.n_way} is larger than the {len(classes)} classes in task.{name}; lower n_way, "
                    f"list more classes, or set task.split_by=examples to use every class in both splits"
                )
        overlap = sorted(set(self.train_classes) & set(self.test_classes))
        if overlap:
            raise ConfigError(
                f"task.train_classes and task.test_classes share {overlap}; meta-test classes must be held out "
                f"(or set task.split_by=examples to divide examples instead of classes)"
            )

    def split_classes(self, split: str, table_classes: tuple[int, ...]) -> tuple[int, ...]:
        """Classes of ``split``; with split_by: examples, every class of the table."""
        if self.split_by == "examples":
            return table_classes
        return self.train_classes if split == "train" else self.test_classes


def check_table(options: TableOptions, labels: np.ndarray, source: str) -> None:
    """Raise ConfigError when the table lacks a class or examples that ``options`` need.

    ``source`` names the table in messages, e.g. ``iris`` or ``'data/blobs.csv'``.
    """
    table_classes, counts = np.unique(labels, return_counts=True)
    count_of = dict(zip(table_classes.tolist(), counts.tolist()))
    class_list = ", ".join(str(label) for label in count_of)

    if options.split_by == "classes":
        for name in ("train_classes", "test_classes"):
            missing = [label for label in getattr(options, name) if label not in count_of]
            if missing:
                raise ConfigError(
                    f"task.{name} lists {missing}, which do not occur in {source} (its classes: {class_list}); "
                    f"list only classes from the data"
                )
        used = options.train_classes + options.test_classes
        needed = options.k_shot + options.n_query
        requirement = f"k_shot + n_query = {needed} are needed per class"
    else:
        if options.n_way > len(count_of):
            raise ConfigError(
                f"task.n_way={options.n_way} is larger than the {len(count_of)} classes of {source}; "
                f"use n_way <= {len(count_of)}"
            )
        used = tuple(count_of)
        needed = 2 * (options.k_shot + options.n_query)
        requirement = (
            f"split_by: examples gives half of each class to meta-test, so 2 * (k_shot + n_query) = {needed} "
            f"are needed per class"
        )

    for label in used:
        if count_of[label] < needed:
            raise ConfigError(
                f"class {label} has {count_of[label]} examples in {source}, but with task.k_shot={options.k_shot} "
                f"and task.n_query={options.n_query}, {requirement}; lower k_shot or n_query, or add examples "
                f"of class {label}"
            )


def table_pools(options: TableOptions, table: Table, split: str) -> ClassPools:
    """Support and query pools of ``split`` ("train" = meta-train, "test" = meta-test)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    features, labels = table
    classes = options.split_classes(split, tuple(np.unique(labels).tolist()))
    if options.split_by == "examples":
        train_indices, test_indices = divide_examples(labels, classes, options.split_seed)
        indices = train_indices if split == "train" else test_indices
        features, labels = features[indices], labels[indices]
    return build_pools(features, labels, classes, options.query_fraction, options.split_seed)


@dataclasses.dataclass(frozen=True)
class TableTask(FewShotClassification):
    """A few-shot task on a table held in memory; subclasses load the table in ``from_config``."""

    config: Any = None  # a TableOptions subclass
    # The table is excluded from hashing and comparison, so the task stays usable as a
    # static argument of jitted functions.
    table: Table | None = dataclasses.field(default=None, compare=False, repr=False)

    @classmethod
    def from_table(cls, config: TableOptions, features: np.ndarray, labels: np.ndarray, source: str) -> TableTask:
        """Scale ``features``, check sizes against ``config`` and build the task; impossible sizes raise ConfigError."""
        check_table(config, labels, source)
        table = Table(scale_features(features, config.scaling), np.asarray(labels, dtype=np.int64))
        task = cls(
            n_inputs=table.features.shape[1],
            n_way=config.n_way,
            k_shot=config.k_shot,
            n_query=config.n_query,
            config=config,
            table=table,
        )
        for split in SPLITS:
            check_split_sizes("task", split, task.data(split), config.n_way, config.k_shot, config.n_query)
        return task

    @property
    def inputs_in_unit_interval(self) -> bool:
        """Whether every feature lies in [0, 1], which only ``minmax`` scaling guarantees."""
        return self.config.scaling == "minmax"

    def data(self, split: str) -> ClassPools:
        """Support and query pools of ``split`` ("train" = meta-train, "test" = meta-test)."""
        if self.table is None:
            raise ValueError(f"{type(self).__name__} has no table; build it with from_config")
        return table_pools(self.config, self.table, split)
