"""Few-shot online classification of scikit-learn's bundled tables: iris, wine, breast cancer.

The tables ship with scikit-learn, so nothing is downloaded:

| task | examples | features | classes (examples per class) |
|---|---|---|---|
| ``iris`` | 150 | 4 | 3 (50, 50, 50) |
| ``wine`` | 178 | 13 | 3 (59, 71, 48) |
| ``breast_cancer`` | 569 | 30 | 2 (212 malignant, 357 benign) |

With so few classes none can be held out, so by default (``split_by: examples``) both
meta-train and meta-test lifetimes draw from every class, and each class's examples are
divided once into a meta-train half and a meta-test half. Features are scaled to [0, 1]
per column by default, like the digits task's pixels, using the minimum and maximum of all
examples of the table regardless of label or split. See :mod:`neuroevo.tasks.tabular`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar

from sklearn.datasets import load_breast_cancer, load_iris, load_wine

from neuroevo.errors import ConfigError
from neuroevo.tasks.tabular import TableOptions, TableTask


@dataclasses.dataclass(frozen=True)
class SklearnTableOptions(TableOptions):
    """Options of a scikit-learn table task; subclasses fix the table and its defaults."""

    table_name: ClassVar[str]
    n_classes: ClassVar[int]
    loader: ClassVar[Callable]  # a sklearn.datasets.load_* function

    def validate(self) -> None:
        for name in ("train_classes", "test_classes"):
            bad = [label for label in getattr(self, name) if not 0 <= label < self.n_classes]
            if bad:
                raise ConfigError(f"task.{name} contains {bad}, but {self.table_name} has classes 0-{self.n_classes - 1}")
        super().validate()
        if self.n_way > self.n_classes:
            raise ConfigError(f"task.n_way={self.n_way} is larger than the {self.n_classes} classes of {self.table_name}; use n_way <= {self.n_classes}")


@dataclasses.dataclass(frozen=True)
class IrisConfig(SklearnTableOptions):
    """Options of the iris task (config section ``task`` with ``name: iris``): 50 examples per class."""

    table_name: ClassVar[str] = "iris"
    n_classes: ClassVar[int] = 3
    loader: ClassVar[Callable] = staticmethod(load_iris)

    n_way: int = 3
    k_shot: int = 10
    n_query: int = 10


@dataclasses.dataclass(frozen=True)
class WineConfig(SklearnTableOptions):
    """Options of the wine task (config section ``task`` with ``name: wine``): 48 to 71 examples per class."""

    table_name: ClassVar[str] = "wine"
    n_classes: ClassVar[int] = 3
    loader: ClassVar[Callable] = staticmethod(load_wine)

    n_way: int = 3
    k_shot: int = 10
    n_query: int = 10


@dataclasses.dataclass(frozen=True)
class BreastCancerConfig(SklearnTableOptions):
    """Options of the breast_cancer task (``name: breast_cancer``): 212 malignant (0) and 357 benign (1) examples."""

    table_name: ClassVar[str] = "breast_cancer"
    n_classes: ClassVar[int] = 2
    loader: ClassVar[Callable] = staticmethod(load_breast_cancer)

    n_way: int = 2
    k_shot: int = 10
    n_query: int = 20


@dataclasses.dataclass(frozen=True)
class SklearnTableTask(TableTask):
    """Few-shot task on the scikit-learn table that the config class names."""

    @classmethod
    def from_config(cls, config: SklearnTableOptions) -> SklearnTableTask:
        bunch = config.loader()
        return cls.from_table(config, bunch.data, bunch.target, config.table_name)
