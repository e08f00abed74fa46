"""Few-shot classification of spike patterns that differ only in which input groups fire together.

The inputs are ``n_groups`` groups of ``channels_per_group`` channels. A class is a pairing of
the groups (a perfect matching: for 6 groups there are 15 classes). In every pattern each
pair fires in its own time slot, in a random slot order, and every channel fires exactly
once, at its slot's start plus a uniform jitter of 0 to ``jitter`` ticks. Every class thus has
the same spike count per channel, and each group's slot is uniform over the slots in every
class: only the coincidences (which groups fire at the same time) tell the classes apart.
A rule that sees only spike rates or counts gets identical presynaptic values for every
input, so it can tell inputs apart only through their weights.

The patterns are drawn once with NumPy from ``split_seed``, like a dataset, and presented
as flattened rasters (``ticks * n_inputs`` values), so the network needs
``network.neurons: lif`` with ``spiking.encoder: raster`` and ``spiking.ticks`` equal to the
task's ``ticks``. Meta-train and meta-test lifetimes draw from disjoint sets of pairings.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from neuroevo.errors import ConfigError
from neuroevo.tasks.fewshot import ClassPools, FewShotClassification, build_pools, check_split_sizes, validate_fewshot_sizes

SPLITS = ("train", "test")


def perfect_matchings(n_groups: int) -> tuple[tuple[tuple[int, int], ...], ...]:
    """List every pairing of ``range(n_groups)`` (even) into ``n_groups / 2`` pairs, in lexicographic order."""
    if n_groups == 0:
        return ((),)
    matchings = []
    for partner in range(1, n_groups):
        rest = [group for group in range(1, n_groups) if group != partner]
        for matching in perfect_matchings(len(rest)):
            matchings.append(((0, partner), *((rest[a], rest[b]) for a, b in matching)))
    return tuple(matchings)


@dataclasses.dataclass(frozen=True)
class SpikePatternsConfig:
    """Options of the spike-pattern task (config section ``task`` with ``name: spike_patterns``)."""

    n_way: int = 3
    k_shot: int = 10
    n_query: int = 20  # query patterns per class
    n_groups: int = 6  # input groups; the classes are their pairings
    channels_per_group: int = 4
    ticks: int = 24  # raster length; must equal spiking.ticks
    slot_ticks: int = 6  # ticks between the starts of consecutive slots
    jitter: int = 1  # each spike fires 0..jitter ticks after its slot starts
    patterns_per_class: int = 80  # patterns drawn per class, divided into support and query pools
    train_classes: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7)  # indices into the pairings (perfect_matchings order)
    test_classes: tuple[int, ...] = (8, 9, 10, 11, 12, 13, 14)
    query_fraction: float = 0.5
    split_seed: int = 0

    @property
    def n_classes(self) -> int:
        return len(perfect_matchings(self.n_groups)) if self.n_groups % 2 == 0 and 2 <= self.n_groups <= 10 else 0

    def validate(self) -> None:
        validate_fewshot_sizes(self)
        if self.n_groups % 2 or not 4 <= self.n_groups <= 10:
            raise ConfigError(f"task.n_groups={self.n_groups} must be even and between 4 and 10, e.g. 6")
        for name in ("channels_per_group", "slot_ticks", "patterns_per_class"):
            if getattr(self, name) < 1:
                raise ConfigError(f"task.{name}={getattr(self, name)} must be at least 1")
        if not 0 <= self.jitter < self.slot_ticks:
            raise ConfigError(f"task.jitter={self.jitter} must be in [0, slot_ticks={self.slot_ticks}), so slots do not overlap")
        last_spike = (self.n_groups // 2 - 1) * self.slot_ticks + self.jitter
        if last_spike >= self.ticks - 1:
            raise ConfigError(
                f"task.ticks={self.ticks} is too short: the last spike comes at tick {last_spike} and the output needs a tick "
                f"to respond; use ticks >= {last_spike + 2}"
            )
        for name in ("train_classes", "test_classes"):
            classes = getattr(self, name)
            bad = [label for label in classes if not 0 <= label < self.n_classes]
            if bad:
                raise ConfigError(f"task.{name} contains {bad}, but {self.n_groups} groups have pairings 0-{self.n_classes - 1}")
            if len(set(classes)) != len(classes) or len(classes) < 2:
                raise ConfigError(f"task.{name}={list(classes)} must list at least 2 pairings, each once")
        overlap = sorted(set(self.train_classes) & set(self.test_classes))
        if overlap:
            raise ConfigError(f"task.train_classes and task.test_classes share {overlap}; meta-test classes must be held out")


def draw_patterns(config: SpikePatternsConfig, matching: tuple[tuple[int, int], ...], count: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``count`` patterns of one class as rasters (count, ticks, n_inputs) of 0/1 values."""
    n_inputs = config.n_groups * config.channels_per_group
    rasters = np.zeros((count, config.ticks, n_inputs), np.float32)
    for index in range(count):
        slots = rng.permutation(len(matching))
        for pair, slot in zip(matching, slots):
            for group in pair:
                channels = np.arange(group * config.channels_per_group, (group + 1) * config.channels_per_group)
                ticks = slot * config.slot_ticks + rng.integers(0, config.jitter + 1, channels.size)
                rasters[index, ticks, channels] = 1.0
    return rasters


@dataclasses.dataclass(frozen=True)
class SpikePatternsTask(FewShotClassification):
    """3-way by default; see :class:`~neuroevo.tasks.fewshot.FewShotClassification`. Inputs are flattened rasters."""

    config: SpikePatternsConfig = SpikePatternsConfig()

    presents_spikes = True  # inputs are spike rasters, not values to encode

    @classmethod
    def from_config(cls, config: SpikePatternsConfig) -> SpikePatternsTask:
        n_inputs = config.n_groups * config.channels_per_group
        task = cls(n_inputs=n_inputs, n_way=config.n_way, k_shot=config.k_shot, n_query=config.n_query, config=config)
        for split in SPLITS:
            check_split_sizes("task", split, task.data(split), config.n_way, config.k_shot, config.n_query)
        return task

    @property
    def raster_ticks(self) -> int:
        return self.config.ticks

    def data(self, split: str) -> ClassPools:
        """Support and query pools of ``split``; each example is a raster flattened to (ticks * n_inputs,)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
        config = self.config
        matchings = perfect_matchings(config.n_groups)
        rng = np.random.default_rng(config.split_seed)
        # Every class is drawn in both splits, so a class's patterns do not depend on the split.
        patterns = [draw_patterns(config, matching, config.patterns_per_class, rng) for matching in matchings]
        features = np.concatenate([rasters.reshape(config.patterns_per_class, -1) for rasters in patterns])
        labels = np.repeat(np.arange(len(matchings)), config.patterns_per_class)
        classes = config.train_classes if split == "train" else config.test_classes
        return build_pools(features, labels, classes, config.query_fraction, config.split_seed)
