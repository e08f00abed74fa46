"""Few-shot online classification of the user's own labelled data, read from a .csv or .npz file.

- ``.csv``: a header row, then one example per row. The column ``label_column`` contains
  integer class labels, and ``feature_columns`` (default: every other column) contain
  numbers. Other columns are ignored.
- ``.npz``: an archive written by ``numpy.savez`` with a 2-D numeric array of features
  (``features_key``, one row per example) and a 1-D array of integer labels (``labels_key``).
  It is loaded with ``allow_pickle=False``, so object arrays are rejected.

Nothing in the file is evaluated as code. A relative ``path`` is resolved from the current
working directory. By default meta-train uses ``train_classes`` and meta-test the held-out
``test_classes``; ``split_by: examples`` instead divides every class's examples between
the two splits. Features are scaled with statistics of every row of the file. See
:mod:`neuroevo.tasks.tabular` for the split and scaling options.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import zipfile
import zlib
from pathlib import Path
from typing import Literal

import numpy as np

from neuroevo.errors import ConfigError, NeuroevoError
from neuroevo.tasks.tabular import TableOptions, TableTask

SUFFIXES = (".csv", ".npz")
_LABEL_HINT = "class labels must be integers such as 0, 1, 2; map class names to integers first"


class DatasetError(NeuroevoError):
    """Invalid content in a user data file; the message names the file, the place and the fix."""


@dataclasses.dataclass(frozen=True)
class UserDatasetConfig(TableOptions):
    """Options of the user dataset task (config section ``task`` with ``name: dataset``)."""

    split_by: Literal["examples", "classes"] = "classes"
    path: str = ""  # .csv or .npz file; a relative path is resolved from the current working directory
    label_column: str = "label"  # .csv only: the column of integer class labels
    feature_columns: tuple[str, ...] | None = None  # .csv only: feature columns; null means every other column
    features_key: str = "x"  # .npz only: the array of features, shape (n_examples, n_features)
    labels_key: str = "y"  # .npz only: the array of labels, shape (n_examples,)

    def validate(self) -> None:
        super().validate()
        if not self.path:
            raise ConfigError("task.path is not set; set it to the .csv or .npz file with your labelled examples")
        suffix = Path(self.path).suffix.lower()
        if suffix not in SUFFIXES:
            raise ConfigError(
                f"task.path={self.path!r} has the unsupported extension {suffix or '(none)'!r}; use a .csv file "
                f"(header row, one example per row) or a .npz file written by numpy.savez"
            )
        if suffix == ".csv":
            self._validate_columns()
        elif self.feature_columns is not None:
            raise ConfigError(
                f"task.feature_columns applies only to .csv files, but task.path={self.path!r} is a .npz file; "
                f"remove feature_columns (the features are the array task.features_key={self.features_key!r})"
            )
        elif self.features_key == self.labels_key:
            raise ConfigError(f"task.features_key and task.labels_key are both {self.features_key!r}; name two different arrays")

    def _validate_columns(self) -> None:
        if not self.label_column:
            raise ConfigError("task.label_column is empty; set it to the name of the column that contains the class labels")
        if self.feature_columns is None:
            return
        if not self.feature_columns:
            raise ConfigError("task.feature_columns is empty; list feature columns, or set it to null to use every column except the label column")
        repeated = sorted({name for name in self.feature_columns if self.feature_columns.count(name) > 1})
        if repeated:
            raise ConfigError(f"task.feature_columns repeats {repeated}; list each column once")
        if self.label_column in self.feature_columns:
            raise ConfigError(
                f"task.feature_columns contains the label column {self.label_column!r}; remove it, because the "
                f"label would give the answer away"
            )


@dataclasses.dataclass(frozen=True)
class UserDatasetTask(TableTask):
    """Few-shot task on the table in ``config.path``; the file is read once, in :meth:`from_config`."""

    @classmethod
    def from_config(cls, config: UserDatasetConfig) -> UserDatasetTask:
        features, labels = load_dataset(config)
        return cls.from_table(config, features, labels, repr(config.path))


def load_dataset(config: UserDatasetConfig) -> tuple[np.ndarray, np.ndarray]:
    """Read the features (float64, 2-D) and integer labels (int64, 1-D) of ``config.path``.

    Raises ConfigError when the file, a column or an array that the config names is
    missing, and DatasetError when the file's content is invalid.
    """
    path = Path(config.path)
    if not path.exists():
        raise ConfigError(
            f"task.path={config.path!r} not found (resolved to {str(path.absolute())!r}; a relative path is "
            f"resolved from the current working directory); fix the path or run from the directory it is relative to"
        )
    if not path.is_file():
        raise ConfigError(f"task.path={config.path!r} is not a file; set it to a .csv or .npz file")
    if path.suffix.lower() == ".csv":
        return read_csv_table(path, config.label_column, config.feature_columns)
    return read_npz_table(path, config.features_key, config.labels_key)


def read_csv_table(path: Path, label_column: str, feature_columns: tuple[str, ...] | None) -> tuple[np.ndarray, np.ndarray]:
    """Parse a CSV file with a header row into features and integer labels.

    Values are parsed with ``float`` and ``int``. Blank lines are skipped, and lines are
    counted from 1 (the header) in messages.
    """
    quoted_path = repr(str(path))
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            header = next(reader, None)
            if header is None:
                raise DatasetError(f"{quoted_path} is empty; the first line must be a header row of column names")
            header = [name.strip() for name in header]
            label_index, feature_indices = _column_indices(header, label_column, feature_columns, quoted_path)

            features: list[list[float]] = []
            labels: list[int] = []
            for record in reader:
                if not record:
                    continue
                line = reader.line_num
                if len(record) != len(header):
                    raise DatasetError(
                        f"{quoted_path} line {line} has {len(record)} fields but the header has {len(header)}; "
                        f"give every row one value per column"
                    )
                labels.append(_parse_csv_label(record[label_index], quoted_path, line, label_column))
                features.append([_parse_csv_feature(record[index], quoted_path, line, header[index]) for index in feature_indices])
    except UnicodeDecodeError as error:
        raise DatasetError(f"{quoted_path} is not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8 CSV") from None
    except csv.Error as error:
        raise DatasetError(f"{quoted_path} is not valid CSV ({error}); check its quoting") from None
    except OSError as error:
        raise DatasetError(f"cannot read {quoted_path} ({error.strerror}); check the file's permissions") from None

    if not labels:
        raise DatasetError(f"{quoted_path} has a header row but no examples; add one row per example")
    return np.asarray(features, dtype=np.float64), np.asarray(labels, dtype=np.int64)


def _column_indices(
    header: list[str], label_column: str, feature_columns: tuple[str, ...] | None, quoted_path: str
) -> tuple[int, list[int]]:
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise DatasetError(f"{quoted_path} has more than one column named {repeated}; give every column a distinct name")
    columns = ", ".join(repr(name) for name in header)
    if label_column not in header:
        raise ConfigError(
            f"task.label_column={label_column!r} is not a column of {quoted_path} (columns: {columns}); set "
            f"task.label_column to the column that contains the class labels"
        )
    if feature_columns is None:
        feature_columns = tuple(name for name in header if name != label_column)
        if not feature_columns:
            raise DatasetError(f"{quoted_path} has only the label column {label_column!r}; add feature columns")
    missing = [name for name in feature_columns if name not in header]
    if missing:
        raise ConfigError(
            f"task.feature_columns lists {missing}, which {'is not a column' if len(missing) == 1 else 'are not columns'} "
            f"of {quoted_path} (columns: {columns}); list only existing columns"
        )
    return header.index(label_column), [header.index(name) for name in feature_columns]


def _parse_csv_feature(text: str, quoted_path: str, line: int, column: str) -> float:
    place = f"{quoted_path} line {line}, column {column!r}"
    if not text.strip():
        raise DatasetError(f"{place} is empty; fill in a number or remove the row")
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"{place}: {text!r} is not a number; features must be numeric") from None
    if math.isnan(value):
        raise DatasetError(f"{place} is NaN ({text!r}); replace it with a number or remove the row")
    if math.isinf(value):
        raise DatasetError(f"{place} is infinite ({text!r}); replace it with a finite number or remove the row")
    return value


def _parse_csv_label(text: str, quoted_path: str, line: int, column: str) -> int:
    place = f"{quoted_path} line {line}, column {column!r}"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value.is_integer()):
        raise DatasetError(f"{place}: {text!r} is not an integer class label; {_LABEL_HINT}")
    return int(value)


def read_npz_table(path: Path, features_key: str, labels_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Load features and integer labels from an .npz archive, with ``allow_pickle=False``."""
    quoted_path = repr(str(path))
    try:
        archive = np.load(path, allow_pickle=False)
    except ValueError:
        # numpy raises ValueError for a file that is neither a zip archive nor a .npy file,
        # with a message that suggests loading it with pickle, which this task never does.
        raise DatasetError(
            f"{quoted_path} is not a valid .npz archive (it is neither a zip archive nor a .npy file); "
            f"write it with numpy.savez(path, x=features, y=labels)"
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise DatasetError(
            f"{quoted_path} is not a valid .npz archive ({error}); write it with numpy.savez(path, x=features, y=labels)"
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DatasetError(
            f"{quoted_path} contains a single .npy array, not an .npz archive; write it with numpy.savez(path, x=features, y=labels)"
        )
    with archive:
        features = _read_npz_array(archive, features_key, "features_key", quoted_path)
        labels = _read_npz_array(archive, labels_key, "labels_key", quoted_path)
    return _check_npz_features(features, features_key, quoted_path), _check_npz_labels(labels, labels_key, len(features), quoted_path)


def _read_npz_array(archive: np.lib.npyio.NpzFile, key: str, config_key: str, quoted_path: str) -> np.ndarray:
    if key not in archive.files:
        raise ConfigError(
            f"task.{config_key}={key!r} is not an array in {quoted_path} (arrays: {', '.join(repr(name) for name in archive.files)}); "
            f"set task.{config_key} to one of them"
        )
    try:
        value = archive[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        # ValueError also covers object arrays, which cannot be loaded without pickle.
        raise DatasetError(
            f"array {key!r} in {quoted_path} cannot be read ({error}); the archive is corrupt or contains Python objects. "
            f"Write numeric arrays with numpy.savez"
        ) from None
    if not isinstance(value, np.ndarray):
        # NpzFile returns a member without the .npy header as raw bytes.
        raise DatasetError(
            f"array {key!r} in {quoted_path} cannot be read (the member {key}.npy has no .npy header); the archive is "
            f"corrupt. Write numeric arrays with numpy.savez"
        )
    return value


def _check_npz_features(features: np.ndarray, key: str, quoted_path: str) -> np.ndarray:
    if features.ndim != 2:
        raise DatasetError(
            f"array {key!r} in {quoted_path} has shape {features.shape}, but features must be 2-D (n_examples, n_features); "
            f"reshape it, e.g. x.reshape(len(x), -1)"
        )
    if not (np.issubdtype(features.dtype, np.integer) or np.issubdtype(features.dtype, np.floating)):
        raise DatasetError(f"array {key!r} in {quoted_path} has dtype {features.dtype}, but features must be integers or floats")
    if len(features) == 0:
        raise DatasetError(f"array {key!r} in {quoted_path} has no rows; it must contain one row per example")
    features = features.astype(np.float64)
    invalid = np.argwhere(~np.isfinite(features))
    if len(invalid):
        row, column = (int(index) for index in invalid[0])
        kind = "NaN" if np.isnan(features[row, column]) else "infinite"
        raise DatasetError(
            f"{quoted_path}: {key}[{row}, {column}] (row {row}, column {column}, counting from 0) is {kind}; "
            f"replace it with a finite number or remove the row"
        )
    return features


def _check_npz_labels(labels: np.ndarray, key: str, n_examples: int, quoted_path: str) -> np.ndarray:
    if labels.ndim != 1:
        raise DatasetError(f"array {key!r} in {quoted_path} has shape {labels.shape}, but labels must be 1-D (n_examples,); flatten it")
    if len(labels) != n_examples:
        raise DatasetError(f"array {key!r} in {quoted_path} has {len(labels)} labels but the features have {n_examples} rows; give one label per row")
    if np.issubdtype(labels.dtype, np.integer):
        return labels.astype(np.int64)
    if np.issubdtype(labels.dtype, np.floating):
        invalid = np.flatnonzero(~np.isfinite(labels) | (labels != np.round(labels)))
    else:
        invalid = np.arange(len(labels))  # strings, booleans and other kinds are never integer labels
    if len(invalid):
        index = int(invalid[0])
        raise DatasetError(f"{quoted_path}: {key}[{index}] = {labels[index].item()!r} is not an integer class label; {_LABEL_HINT}")
    return labels.astype(np.int64)
