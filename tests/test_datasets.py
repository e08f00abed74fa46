"""Table tasks: scikit-learn's iris, wine and breast_cancer, and the user dataset task (.csv, .npz)."""

from __future__ import annotations

import dataclasses
import zipfile

import jax
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_iris, load_wine

from neuroevo.cli import main
from neuroevo.config import config_from_dict
from neuroevo.errors import ConfigError, NeuroevoError
from neuroevo.tasks import DatasetError, SklearnTableTask, build_task
from neuroevo.tasks.fewshot import scale_features

SKLEARN_TABLES = [
    # name, loader, n_features, n_classes
    ("iris", load_iris, 4, 3),
    ("wine", load_wine, 13, 3),
    ("breast_cancer", load_breast_cancer, 30, 2),
]
N_CLASSES = 4
N_PER_CLASS = 30
N_FEATURES = 3


def task_config(**task):
    return config_from_dict({"task": task}).task


def pool_rows(pools):
    """Rows of the support and query pools, each as a (n, n_features) numpy array."""
    support, query = (np.asarray(pool) for pool in pools)
    return support.reshape(-1, support.shape[-1]), query.reshape(-1, query.shape[-1])


def id_task(name, loader, **options):
    """The named task built on its real labels, with feature 0 of each example set to its row index."""
    config = dataclasses.replace(task_config(name=name, **options), scaling="none")
    labels = loader().target
    ids = np.arange(len(labels), dtype=np.float64)[:, None]
    return SklearnTableTask.from_table(config, ids, labels, name), labels


def make_table(seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(N_CLASSES), N_PER_CLASS)
    features = rng.normal(size=(len(labels), N_FEATURES))
    return features, labels


def write_csv(path, features, labels, header=None):
    header = header or [f"x{index}" for index in range(features.shape[1])] + ["label"]
    lines = [",".join(header)]
    lines += [",".join([repr(float(value)) for value in row] + [str(label)]) for row, label in zip(features, labels)]
    path.write_text("\n".join(lines) + "\n")
    return path


def csv_task_options(path, **options):
    defaults = {
        "name": "dataset",
        "path": str(path),
        "train_classes": [0, 1],
        "test_classes": [2, 3],
        "n_way": 2,
        "k_shot": 5,
        "n_query": 5,
    }
    return {**defaults, **options}


def build_dataset_task(path, **options):
    return build_task(task_config(**csv_task_options(path, **options)))


@pytest.fixture
def csv_path(tmp_path):
    features, labels = make_table()
    return write_csv(tmp_path / "data.csv", features, labels)


def csv_with_cell(tmp_path, row, column, text):
    """A valid CSV file whose cell (data row ``row``, column ``column``) is replaced by ``text``."""
    features, labels = make_table()
    path = write_csv(tmp_path / "data.csv", features, labels)
    lines = path.read_text().splitlines()
    cells = lines[row + 1].split(",")
    cells[column] = text
    lines[row + 1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    return path


# scikit-learn tables


@pytest.mark.parametrize("name, loader, n_features, n_classes", SKLEARN_TABLES)
def test_sklearn_task_shapes(name, loader, n_features, n_classes):
    task = build_task(task_config(name=name))
    assert task.n_inputs == n_features
    assert task.n_outputs == n_classes
    for split in ("train", "test"):
        pools = task.data(split)
        assert pools.support.shape[0] == n_classes
        assert pools.support.shape[2] == n_features
        assert pools.query.shape[0] == n_classes
        assert pools.support.shape[1] >= task.k_shot
        assert pools.query.shape[1] >= task.n_query

        instance = task.sample(jax.random.key(0), pools)
        assert instance.train_x.shape == (n_classes * task.k_shot, n_features)
        assert instance.query_x.shape == (n_classes * task.n_query, n_features)
        assert np.bincount(np.asarray(instance.train_y), minlength=n_classes).tolist() == [task.k_shot] * n_classes
        assert np.bincount(np.asarray(instance.query_y), minlength=n_classes).tolist() == [task.n_query] * n_classes


@pytest.mark.parametrize("name, loader, n_features, n_classes", SKLEARN_TABLES)
def test_sklearn_examples_in_one_place(name, loader, n_features, n_classes):
    task, labels = id_task(name, loader)
    places = {}
    for split in ("train", "test"):
        pools = task.data(split)
        for pool_name, pool in zip(("support", "query"), pools):
            pool = np.asarray(pool)
            for class_index in range(pool.shape[0]):
                ids = pool[class_index, :, 0].astype(int)
                assert len(set(labels[ids].tolist())) == 1, f"{split} {pool_name} row {class_index} mixes classes"
                for example in ids.tolist():
                    assert example not in places, f"example {example} is in {places.get(example)} and {split} {pool_name}"
                    places[example] = f"{split} {pool_name}"
    assert set(places.values()) == {"train support", "train query", "test support", "test query"}


@pytest.mark.parametrize("name, loader, n_features, n_classes", SKLEARN_TABLES)
def test_sklearn_examples_split_uses_every_class(name, loader, n_features, n_classes):
    task, labels = id_task(name, loader)
    for split in ("train", "test"):
        support = np.asarray(task.data(split).support)
        classes = {int(labels[int(row[0, 0])]) for row in support}
        assert classes == set(range(n_classes))


def test_split_seed_changes_division():
    first, _ = id_task("iris", load_iris, split_seed=0)
    second, _ = id_task("iris", load_iris, split_seed=1)
    assert not np.array_equal(np.asarray(first.data("train").support), np.asarray(second.data("train").support))


@pytest.mark.parametrize("name, loader, n_features, n_classes", SKLEARN_TABLES)
def test_minmax_scaling_range(name, loader, n_features, n_classes):
    task = build_task(task_config(name=name))
    assert np.allclose(task.table.features.min(axis=0), 0.0)
    assert np.allclose(task.table.features.max(axis=0), 1.0)
    for split in ("train", "test"):
        for rows in pool_rows(task.data(split)):
            assert rows.min() >= 0.0
            assert rows.max() <= 1.0


@pytest.mark.parametrize("name, loader, n_features, n_classes", SKLEARN_TABLES)
def test_standard_scaling_moments(name, loader, n_features, n_classes):
    task = build_task(task_config(name=name, scaling="standard"))
    assert np.allclose(task.table.features.mean(axis=0), 0.0, atol=1e-5)
    assert np.allclose(task.table.features.std(axis=0), 1.0, atol=1e-4)


def test_no_scaling_keeps_values():
    task = build_task(task_config(name="wine", scaling="none"))
    assert np.allclose(task.table.features, load_wine().data)


def test_scaling_constant_column_is_zero():
    features = np.array([[1.0, 5.0], [3.0, 5.0], [2.0, 5.0]])
    for scaling in ("minmax", "standard"):
        scaled = scale_features(features, scaling)
        assert np.all(np.isfinite(scaled))
        assert np.all(scaled[:, 1] == 0.0)
    assert scale_features(features, "minmax")[:, 0].tolist() == [0.0, 1.0, 0.5]


def test_sklearn_n_way_too_large():
    with pytest.raises(ConfigError, match=r"task.n_way=3 is larger than the 2 classes of breast_cancer"):
        task_config(name="breast_cancer", n_way=3)


def test_sklearn_class_out_of_range():
    with pytest.raises(ConfigError, match=r"task.test_classes contains \[3\], but iris has classes 0-2"):
        task_config(name="iris", split_by="classes", n_way=2, train_classes=[0, 1], test_classes=[3])


def test_sklearn_classes_split_too_few_classes():
    with pytest.raises(ConfigError, match=r"task.n_way=2 is larger than the 1 classes in task.test_classes"):
        task_config(name="iris", split_by="classes", n_way=2, train_classes=[0, 1], test_classes=[2])


def test_class_lists_rejected_with_examples_split():
    with pytest.raises(ConfigError, match=r"task.train_classes=\[0, 1\] is used only with split_by: classes"):
        task_config(name="iris", train_classes=[0, 1])


def test_classes_split_needs_class_lists():
    with pytest.raises(ConfigError, match=r"task.train_classes is empty"):
        task_config(name="wine", split_by="classes")


def test_unknown_scaling_rejected():
    with pytest.raises(ConfigError, match=r"task.scaling='zscore' is not one of"):
        task_config(name="iris", scaling="zscore")


def test_sklearn_too_few_examples():
    # Iris has 50 examples per class; split_by: examples gives 25 to each split.
    with pytest.raises(ConfigError) as error:
        build_task(task_config(name="iris", k_shot=20, n_query=10))
    message = str(error.value)
    assert "class 0 has 50 examples in iris" in message
    assert "2 * (k_shot + n_query) = 60 are needed per class" in message


# user dataset: round trips


def test_csv_round_trip(csv_path):
    features, labels = make_table()
    task = build_dataset_task(csv_path, scaling="none")
    assert task.n_inputs == N_FEATURES
    assert task.n_outputs == 2
    assert np.allclose(task.table.features, features)
    assert task.table.labels.tolist() == labels.tolist()
    assert task.data("train").support.shape == (2, N_PER_CLASS // 2, N_FEATURES)
    assert task.data("test").query.shape == (2, N_PER_CLASS // 2, N_FEATURES)


def test_npz_round_trip(tmp_path):
    features, labels = make_table()
    path = tmp_path / "data.npz"
    np.savez(path, x=features, y=labels)
    task = build_dataset_task(path, scaling="none")
    assert task.n_inputs == N_FEATURES
    assert np.allclose(task.table.features, features)
    assert task.table.labels.tolist() == labels.tolist()


def test_npz_custom_keys_and_float_labels(tmp_path):
    features, labels = make_table()
    path = tmp_path / "data.npz"
    np.savez(path, inputs=features.astype(np.float32), targets=labels.astype(np.float64))
    task = build_dataset_task(path, features_key="inputs", labels_key="targets")
    assert task.table.labels.tolist() == labels.tolist()


def test_csv_feature_columns_subset(tmp_path):
    features, labels = make_table()
    path = write_csv(tmp_path / "data.csv", features, labels, header=["a", "b", "c", "target"])
    task = build_dataset_task(path, label_column="target", feature_columns=["c", "a"], scaling="none")
    assert task.n_inputs == 2
    assert np.allclose(task.table.features, features[:, [2, 0]])


def test_csv_relative_path_from_working_directory(csv_path, monkeypatch):
    monkeypatch.chdir(csv_path.parent)
    task = build_dataset_task("data.csv")
    assert task.n_inputs == N_FEATURES


def test_dataset_classes_split_disjoint(tmp_path):
    labels = np.repeat(np.arange(N_CLASSES), N_PER_CLASS)
    ids = np.arange(len(labels), dtype=np.float64)[:, None]
    path = write_csv(tmp_path / "ids.csv", ids, labels)
    task = build_dataset_task(path, scaling="none")
    seen = {}
    for split in ("train", "test"):
        for pool_name, rows in zip(("support", "query"), pool_rows(task.data(split))):
            for example in rows[:, 0].astype(int).tolist():
                assert example not in seen, f"example {example} is in {seen.get(example)} and {split} {pool_name}"
                seen[example] = split
    assert {int(labels[example]) for example, split in seen.items() if split == "train"} == {0, 1}
    assert {int(labels[example]) for example, split in seen.items() if split == "test"} == {2, 3}


def test_dataset_examples_split(csv_path):
    task = build_dataset_task(csv_path, split_by="examples", train_classes=[], test_classes=[], n_way=4)
    assert task.data("train").support.shape[0] == N_CLASSES
    assert task.data("test").support.shape[0] == N_CLASSES


def test_minmax_scaling_uses_every_row(csv_path):
    task = build_dataset_task(csv_path)
    assert np.allclose(task.table.features.min(axis=0), 0.0)
    assert np.allclose(task.table.features.max(axis=0), 1.0)


# user dataset: invalid input


def test_missing_file(tmp_path):
    path = tmp_path / "absent.csv"
    with pytest.raises(ConfigError, match=r"task.path=.*absent.csv' not found.*current working directory"):
        build_dataset_task(path)


def test_unsupported_extension(tmp_path):
    with pytest.raises(ConfigError, match=r"unsupported extension '.txt'; use a .csv file"):
        task_config(**csv_task_options(tmp_path / "data.txt"))


def test_missing_path():
    with pytest.raises(ConfigError, match=r"task.path is not set"):
        task_config(name="dataset", train_classes=[0, 1], test_classes=[2, 3])


def test_missing_label_column(csv_path):
    with pytest.raises(ConfigError, match=r"task.label_column='target' is not a column of .*data.csv.*'x0', 'x1'"):
        build_dataset_task(csv_path, label_column="target")


def test_missing_feature_column(csv_path):
    with pytest.raises(ConfigError, match=r"task.feature_columns lists \['x9'\], which is not a column"):
        build_dataset_task(csv_path, feature_columns=["x0", "x9"])


def test_label_in_feature_columns(csv_path):
    with pytest.raises(ConfigError, match=r"task.feature_columns contains the label column 'label'"):
        task_config(**csv_task_options(csv_path, feature_columns=["x0", "label"]))


def test_non_numeric_feature(tmp_path):
    path = csv_with_cell(tmp_path, row=1, column=1, text="abc")
    with pytest.raises(DatasetError) as error:
        build_dataset_task(path)
    message = str(error.value)
    assert "line 3" in message
    assert "column 'x1'" in message
    assert "'abc' is not a number" in message


def test_empty_feature_cell(tmp_path):
    path = csv_with_cell(tmp_path, row=0, column=2, text="")
    with pytest.raises(DatasetError, match=r"line 2, column 'x2' is empty"):
        build_dataset_task(path)


@pytest.mark.parametrize("text, kind", [("nan", "NaN"), ("NaN", "NaN"), ("inf", "infinite"), ("-inf", "infinite")])
def test_csv_non_finite_feature(tmp_path, text, kind):
    path = csv_with_cell(tmp_path, row=2, column=0, text=text)
    with pytest.raises(DatasetError) as error:
        build_dataset_task(path)
    message = str(error.value)
    assert "line 4" in message
    assert "column 'x0'" in message
    assert f"is {kind}" in message


@pytest.mark.parametrize("value, kind", [(np.nan, "NaN"), (np.inf, "infinite")])
def test_npz_non_finite_feature(tmp_path, value, kind):
    features, labels = make_table()
    features[5, 1] = value
    path = tmp_path / "data.npz"
    np.savez(path, x=features, y=labels)
    with pytest.raises(DatasetError, match=rf"x\[5, 1\] \(row 5, column 1, counting from 0\) is {kind}"):
        build_dataset_task(path)


@pytest.mark.parametrize("text", ["cat", "1.5", "nan", ""])
def test_csv_non_integer_label(tmp_path, text):
    path = csv_with_cell(tmp_path, row=3, column=N_FEATURES, text=text)
    with pytest.raises(DatasetError) as error:
        build_dataset_task(path)
    message = str(error.value)
    assert "line 5" in message
    assert "column 'label'" in message
    assert f"{text!r} is not an integer class label" in message


def test_csv_integral_float_label_accepted(tmp_path):
    path = csv_with_cell(tmp_path, row=3, column=N_FEATURES, text="0.0")
    task = build_dataset_task(path)
    assert task.table.labels[3] == 0


def test_npz_float_label(tmp_path):
    features, labels = make_table()
    labels = labels.astype(np.float64)
    labels[7] = 1.5
    path = tmp_path / "data.npz"
    np.savez(path, x=features, y=labels)
    with pytest.raises(DatasetError, match=r"y\[7\] = 1.5 is not an integer class label"):
        build_dataset_task(path)


def test_npz_string_label(tmp_path):
    features, _ = make_table()
    labels = np.array(["cat"] * len(features))
    path = tmp_path / "data.npz"
    np.savez(path, x=features, y=labels)
    with pytest.raises(DatasetError, match=r"y\[0\] = 'cat' is not an integer class label"):
        build_dataset_task(path)


def test_too_few_examples_per_class(tmp_path):
    features, labels = make_table()
    keep = (labels != 2) | (np.arange(len(labels)) % N_PER_CLASS < 7)
    path = write_csv(tmp_path / "data.csv", features[keep], labels[keep])
    with pytest.raises(ConfigError) as error:
        build_dataset_task(path)
    message = str(error.value)
    assert "class 2 has 7 examples" in message
    assert "k_shot + n_query = 10 are needed per class" in message


def test_classes_not_in_file(csv_path):
    with pytest.raises(ConfigError, match=r"task.test_classes lists \[7\], which do not occur in .*data.csv.*0, 1, 2, 3"):
        build_dataset_task(csv_path, test_classes=[2, 7])


def test_corrupt_npz(tmp_path):
    path = tmp_path / "data.npz"
    path.write_bytes(b"not an archive at all")
    with pytest.raises(DatasetError) as error:
        build_dataset_task(path)
    message = str(error.value)
    assert "data.npz' is not a valid .npz archive" in message
    assert "pickle" not in message


def test_truncated_npz(tmp_path):
    features, labels = make_table()
    path = tmp_path / "data.npz"
    np.savez(path, x=features, y=labels)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DatasetError, match=r"data.npz' is not a valid .npz archive"):
        build_dataset_task(path)


def test_npz_corrupt_member(tmp_path):
    features, labels = make_table()
    path = tmp_path / "data.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", b"garbage")
        np.save(tmp_path / "y.npy", labels)
        archive.write(tmp_path / "y.npy", "y.npy")
    with pytest.raises(DatasetError, match=r"array 'x' in .*data.npz' cannot be read"):
        build_dataset_task(path)


def test_npz_object_array(tmp_path):
    features, labels = make_table()
    path = tmp_path / "data.npz"
    np.savez(path, x=features, y=np.array(list(labels), dtype=object))
    with pytest.raises(DatasetError, match=r"array 'y' in .*data.npz' cannot be read"):
        build_dataset_task(path)


def test_npz_missing_array(tmp_path):
    features, labels = make_table()
    path = tmp_path / "data.npz"
    np.savez(path, features=features, y=labels)
    with pytest.raises(ConfigError, match=r"task.features_key='x' is not an array in .*\(arrays: 'features', 'y'\)"):
        build_dataset_task(path)


def test_npz_single_array(tmp_path):
    path = tmp_path / "data.npz"
    with open(path, "wb") as file:
        np.save(file, np.zeros((3, 2)))
    with pytest.raises(DatasetError, match=r"contains a single .npy array, not an .npz archive"):
        build_dataset_task(path)


def test_npz_label_count_mismatch(tmp_path):
    features, labels = make_table()
    path = tmp_path / "data.npz"
    np.savez(path, x=features, y=labels[:-1])
    with pytest.raises(DatasetError, match=r"has 119 labels but the features have 120 rows"):
        build_dataset_task(path)


def test_csv_ragged_row(tmp_path, csv_path):
    lines = csv_path.read_text().splitlines()
    lines[4] += ",0.5"
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"line 5 has 5 fields but the header has 4"):
        build_dataset_task(csv_path)


def test_csv_empty_file(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("")
    with pytest.raises(DatasetError, match=r"data.csv' is empty"):
        build_dataset_task(path)


def test_csv_header_only(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("x0,label\n")
    with pytest.raises(DatasetError, match=r"has a header row but no examples"):
        build_dataset_task(path)


def test_dataset_errors_are_neuroevo_errors():
    assert issubclass(DatasetError, NeuroevoError)


# command line


def test_cli_rejects_csv_with_nan(tmp_path, capsys):
    path = csv_with_cell(tmp_path, row=0, column=1, text="nan")
    config = tmp_path / "run.yaml"
    config.write_text(
        "task:\n"
        "  name: dataset\n"
        f"  path: {str(path)!r}\n"
        "  train_classes: [0, 1]\n"
        "  test_classes: [2, 3]\n"
        "  n_way: 2\n"
        "  k_shot: 5\n"
        "  n_query: 5\n"
    )
    code = main(["evolve", str(config), "--out", str(tmp_path / "run")])
    captured = capsys.readouterr()
    assert code == 2
    assert "neuroevo: error:" in captured.err
    assert "line 2, column 'x1' is NaN" in captured.err
    assert "Traceback" not in captured.err


def test_values_too_large_to_scale_rejected():
    features = np.array([[1e308, 0.0], [-1e308, 1.0], [0.0, 2.0]])
    with pytest.raises(NeuroevoError, match="feature column 0 has values too large"):
        scale_features(features, "minmax")
