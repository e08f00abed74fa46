"""Few-shot digits instances: sizes, labels, disjoint pools and splits, and a label-leak check."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

from neuroevo import graph
from neuroevo.baselines import GradientBaseline
from neuroevo.lifetime import Learner
from neuroevo.tasks import DigitsConfig, build_task

import reference

N_WAY, K_SHOT, N_QUERY = 5, 4, 6
N_INSTANCES = 16


@pytest.fixture(scope="module")
def digit_of_image() -> dict[bytes, int]:
    """True digit of every image, keyed by its bytes as the task scales it (float32 pixels / 16)."""
    digits = load_digits()
    images = digits.data.astype(np.float32) / 16.0
    lookup = {image.tobytes(): int(label) for image, label in zip(images, digits.target)}
    assert len(lookup) == len(images)  # no two images are identical, so bytes identify an image
    return lookup


def digits_of(rows: np.ndarray, lookup: dict[bytes, int]) -> np.ndarray:
    return np.array([lookup[np.asarray(row, np.float32).tobytes()] for row in rows])


@pytest.fixture(scope="module")
def task():
    return build_task(DigitsConfig(n_way=N_WAY, k_shot=K_SHOT, n_query=N_QUERY))


@pytest.fixture(scope="module")
def pools(task):
    return {split: task.data(split) for split in ("train", "test")}


@pytest.fixture(scope="module")
def instances(task, pools):
    """Meta-train instances of N_INSTANCES keys, as NumPy arrays with a leading instance axis."""
    keys = jax.random.split(jax.random.key(0), N_INSTANCES)
    batch = jax.jit(jax.vmap(task.sample, in_axes=(0, None)))(keys, pools["train"])
    return jax.tree.map(np.asarray, batch)


def test_sample_shapes(instances):
    assert instances.train_x.shape == (N_INSTANCES, N_WAY * K_SHOT, 64)
    assert instances.train_y.shape == (N_INSTANCES, N_WAY * K_SHOT)
    assert instances.query_x.shape == (N_INSTANCES, N_WAY * N_QUERY, 64)
    assert instances.query_y.shape == (N_INSTANCES, N_WAY * N_QUERY)


def test_sample_dtypes(instances):
    assert instances.train_x.dtype == np.float32
    assert instances.train_y.dtype == np.int32
    assert instances.query_y.dtype == np.int32


def test_sample_pixels_scaled(instances):
    assert instances.train_x.min() >= 0.0
    assert instances.train_x.max() <= 1.0


def test_sample_labels_in_range(instances):
    for labels in (instances.train_y, instances.query_y):
        assert labels.min() == 0
        assert labels.max() == N_WAY - 1


def test_sample_k_shot_per_class(instances):
    for index, labels in enumerate(instances.train_y):
        assert np.bincount(labels, minlength=N_WAY).tolist() == [K_SHOT] * N_WAY, f"instance {index}"


def test_sample_n_query_per_class(instances):
    for index, labels in enumerate(instances.query_y):
        assert np.bincount(labels, minlength=N_WAY).tolist() == [N_QUERY] * N_WAY, f"instance {index}"


def test_sample_training_order_shuffled(instances):
    # A stream sorted by label would teach one class at a time.
    assert not all(np.all(np.diff(labels) >= 0) for labels in instances.train_y)


def test_sample_labels_name_one_digit(instances, digit_of_image):
    for index in range(N_INSTANCES):
        train_digits = digits_of(instances.train_x[index], digit_of_image)
        query_digits = digits_of(instances.query_x[index], digit_of_image)
        units = {}
        for unit in range(N_WAY):
            in_train = set(train_digits[instances.train_y[index] == unit])
            in_query = set(query_digits[instances.query_y[index] == unit])
            assert len(in_train) == 1, f"instance {index}, unit {unit}"
            assert in_query == in_train, f"instance {index}, unit {unit}"
            units[unit] = in_train.pop()
        assert len(set(units.values())) == N_WAY, f"instance {index}"
        assert set(units.values()) <= {0, 1, 2, 3, 4}, f"instance {index}"


def test_sample_unit_mapping_varies(instances, digit_of_image):
    first_unit_digits = {
        int(digits_of(instances.train_x[index][instances.train_y[index] == 0][:1], digit_of_image)[0])
        for index in range(N_INSTANCES)
    }

    assert len(first_unit_digits) > 1


def test_sample_images_distinct(instances):
    for index in range(N_INSTANCES):
        rows = {row.tobytes() for row in instances.train_x[index]}
        assert len(rows) == N_WAY * K_SHOT, f"instance {index}"


def test_query_never_in_training_stream(instances):
    for index in range(N_INSTANCES):
        train_rows = {row.tobytes() for row in instances.train_x[index]}
        query_rows = {row.tobytes() for row in instances.query_x[index]}
        assert not train_rows & query_rows, f"instance {index}"


@pytest.mark.parametrize("split", ["train", "test"])
def test_support_query_pools_disjoint(pools, split):
    support = {row.tobytes() for row in np.asarray(pools[split].support).reshape(-1, 64)}
    query = {row.tobytes() for row in np.asarray(pools[split].query).reshape(-1, 64)}

    assert support
    assert query
    assert not support & query


@pytest.mark.parametrize(("split", "classes"), [("train", [0, 1, 2, 3, 4]), ("test", [5, 6, 7, 8, 9])])
def test_pools_hold_split_classes(pools, digit_of_image, split, classes):
    for pool_name in ("support", "query"):
        pool = np.asarray(getattr(pools[split], pool_name))
        for position, expected in enumerate(classes):
            found = set(digits_of(pool[position], digit_of_image))
            assert found == {expected}, f"{split} {pool_name} pool, class position {position}"


def test_pool_sizes(pools):
    # Every class keeps min(images per class) images: half as query, half as support.
    digits = load_digits()
    for split, classes in (("train", range(5)), ("test", range(5, 10))):
        count = min(int((digits.target == label).sum()) for label in classes)
        assert pools[split].query.shape == (5, round(count * 0.5), 64), split
        assert pools[split].support.shape == (5, count - round(count * 0.5), 64), split


def test_meta_splits_share_no_image(pools):
    def rows(split):
        return {row.tobytes() for pool in pools[split] for row in np.asarray(pool).reshape(-1, 64)}

    assert not rows("train") & rows("test")


# Label-leak check: shuffled training labels leave nothing to learn ------------------------

LEAK_WAY, LEAK_SHOT, LEAK_QUERY, LEAK_LIFETIMES = 5, 10, 20, 64


@pytest.fixture(scope="module")
def leak_setup():
    task = build_task(DigitsConfig(n_way=LEAK_WAY, k_shot=LEAK_SHOT, n_query=LEAK_QUERY))
    pools = task.data("test")
    keys = jax.random.split(jax.random.key(11), LEAK_LIFETIMES)
    instance_keys, network_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
    instances = jax.vmap(task.sample, in_axes=(0, None))(instance_keys, pools)

    def shuffle(key, labels):
        return labels[jax.random.permutation(key, labels.shape[0])]

    shuffle_keys = jax.random.split(jax.random.key(12), LEAK_LIFETIMES)
    shuffled = instances._replace(train_y=jax.vmap(shuffle)(shuffle_keys, instances.train_y))
    learner = Learner(graph.layered_topology(64, (), LEAK_WAY), reference.DeltaRule(0.3), feedback="none")
    return learner, task, instances, shuffled, network_keys


@pytest.fixture(scope="module")
def delta_rule_accuracy(leak_setup):
    learner, task, instances, shuffled, network_keys = leak_setup
    params = learner.rule.init(jax.random.key(0))
    run = jax.jit(jax.vmap(lambda instance, key: task.lifetime(learner, params, instance, key)))
    return {name: float(run(batch, network_keys).metric.mean()) for name, batch in (("labels", instances), ("shuffled", shuffled))}


@pytest.fixture(scope="module")
def sgd_accuracy(leak_setup):
    learner, task, instances, shuffled, network_keys = leak_setup
    baseline = GradientBaseline(learner, task, "sgd", epochs=1)
    run = jax.jit(jax.vmap(lambda instance, key: baseline.run(jnp.float32(0.3), instance, key)))
    return {name: float(run(batch, network_keys).metric.mean()) for name, batch in (("labels", instances), ("shuffled", shuffled))}


@pytest.mark.parametrize("method", ["delta_rule_accuracy", "sgd_accuracy"])
def test_true_labels_learned(method, request):
    accuracy = request.getfixturevalue(method)

    assert accuracy["labels"] > 0.6


@pytest.mark.parametrize("method", ["delta_rule_accuracy", "sgd_accuracy"])
def test_shuffled_labels_chance(method, request):
    # Chance is 1 / n_way = 0.2. The standard error of the mean over 64 lifetimes of 100
    # query images is about 0.005 (more, because the images of one lifetime correlate).
    accuracy = request.getfixturevalue(method)

    assert accuracy["shuffled"] == pytest.approx(1 / LEAK_WAY, abs=0.05)
