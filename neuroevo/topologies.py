"""Topology builders beyond the layered feed-forward graph, and the step from config to Topology.

- ``recurrent``: a layered graph plus dense blocks from a group to itself or to an earlier
  group; it propagates by synchronous ticks instead of one ordered sweep.
- ``sparse``: a layered graph whose non-bias blocks keep a random subset of
  ``round(density * n_dst * n_src)`` edges, stored as edge lists.
- ``small_world``: a layered graph plus, in every hidden layer, a recurrent block with the
  Watts-Strogatz structure (Watts and Strogatz 1998, "Collective dynamics of 'small-world'
  networks"): a ring lattice where each neuron links to its ``neighbours`` nearest
  neurons, then each lattice link rewired to a random neuron with probability ``rewire``.
  Each undirected link becomes two directed edges, stored as an edge list.
- ``local``: a first hidden layer of local receptive fields on an image input, like a
  convolution without weight sharing (a locally connected layer): each of ``channels``
  neurons per patch position receives one square patch of pixels. It is a dense block with a
  fixed mask.

Random structure is drawn with NumPy from the run seed when the experiment is built, so it
is static: every lifetime, member and process of a run uses the same graph.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from neuroevo.config import NetworkConfig
from neuroevo.errors import ConfigError
from neuroevo.graph import EdgeList, FixedMask, Topology, layered_topology


def recurrent_topology(layered: Topology, edges: tuple[tuple[str, str], ...]) -> Topology:
    """Add a full dense block for every ``(src, dst)`` pair of group names to ``layered``."""
    index = {name: group for group, name in enumerate(layered.group_names)}
    blocks = tuple((index[src], index[dst]) for src, dst in edges)
    repeated = set(blocks) & set(layered.blocks)
    if repeated or len(set(blocks)) != len(blocks):
        raise ValueError(f"recurrent edges {edges} repeat a block of the graph")
    connectivity = layered.connectivity or (None,) * len(layered.blocks)
    return dataclasses.replace(layered, blocks=layered.blocks + blocks, connectivity=connectivity + (None,) * len(blocks))


def sparse_topology(layered: Topology, density: float, rng: np.random.Generator) -> Topology:
    """Replace every non-bias block of ``layered`` by an edge list of ``round(density * n_dst * n_src)`` random edges (at least 1)."""
    connectivity = []
    for block, (src, _) in enumerate(layered.blocks):
        if src == layered.bias_group:
            connectivity.append(None)
            continue
        n_dst, n_src = layered.block_shape(block)
        count = max(1, round(density * n_dst * n_src))
        flat = rng.choice(n_dst * n_src, size=count, replace=False)
        connectivity.append(EdgeList(flat // n_src, flat % n_src))
    return dataclasses.replace(layered, connectivity=tuple(connectivity))


def watts_strogatz_edges(n: int, neighbours: int, rewire: float, rng: np.random.Generator) -> EdgeList:
    """Directed edges of a Watts-Strogatz graph on ``n`` neurons, both directions of every link.

    The lattice links ``i`` to ``i + 1 .. i + neighbours / 2`` (mod n). Each link ``(i, j)``
    is then, with probability ``rewire``, replaced by ``(i, k)`` with ``k`` drawn uniformly
    among the neurons that are neither ``i`` nor already linked to ``i``. The graph keeps
    ``n * neighbours / 2`` links and has no self-loops.
    """
    if neighbours % 2 or not 2 <= neighbours < n:
        raise ValueError(f"neighbours={neighbours} must be even, at least 2 and below n={n}")
    linked = [set() for _ in range(n)]
    links = []
    for offset in range(1, neighbours // 2 + 1):
        for i in range(n):
            j = (i + offset) % n
            links.append((i, j))
            linked[i].add(j)
            linked[j].add(i)

    for position, (i, j) in enumerate(links):
        if rng.random() >= rewire:
            continue
        free = [k for k in range(n) if k != i and k not in linked[i]]
        if not free:
            continue
        k = free[rng.integers(len(free))]
        linked[i].discard(j)
        linked[j].discard(i)
        linked[i].add(k)
        linked[k].add(i)
        links[position] = (i, k)

    dst = [a for a, b in links] + [b for a, b in links]
    src = [b for a, b in links] + [a for a, b in links]
    return EdgeList(dst, src)


def small_world_topology(layered: Topology, neighbours: int, rewire: float, rng: np.random.Generator) -> Topology:
    """Add a Watts-Strogatz recurrent edge list within every hidden group of ``layered``."""
    groups = layered.hidden_groups
    blocks = tuple((group, group) for group in groups)
    lists = tuple(watts_strogatz_edges(layered.group_sizes[group], neighbours, rewire, rng) for group in groups)
    connectivity = layered.connectivity or (None,) * len(layered.blocks)
    return dataclasses.replace(layered, blocks=layered.blocks + blocks, connectivity=connectivity + lists)


def patch_grid(image_shape: tuple[int, int], field: int, stride: int) -> tuple[int, int]:
    """Patch positions (rows, columns) of a ``field x field`` window moved by ``stride`` over the image."""
    height, width = image_shape
    return (height - field) // stride + 1, (width - field) // stride + 1


def receptive_field_mask(image_shape: tuple[int, int], field: int, stride: int, channels: int) -> np.ndarray:
    """Mask (n_local, height * width) of a locally connected layer over a row-major image.

    Neuron ``(row * columns + column) * channels + channel`` receives the pixels of the patch
    whose top-left corner is ``(row * stride, column * stride)``.
    """
    height, width = image_shape
    rows, columns = patch_grid(image_shape, field, stride)
    mask = np.zeros((rows * columns * channels, height * width), np.float32)
    for row in range(rows):
        for column in range(columns):
            patch = np.zeros((height, width), np.float32)
            patch[row * stride : row * stride + field, column * stride : column * stride + field] = 1.0
            first = (row * columns + column) * channels
            mask[first : first + channels] = patch.reshape(-1)
    return mask


def build_topology(network: NetworkConfig, n_inputs: int, n_outputs: int, image_shape: tuple[int, int] | None, seed: int) -> Topology:
    """Build the topology that ``network`` describes for a task's sizes.

    ``image_shape`` is (height, width) for tasks whose inputs are row-major images, else
    None. Sizes that only the task fixes (a receptive field larger than the image, an input
    that is not an image) raise :class:`ConfigError`.
    """
    hidden = network.hidden
    if network.topology == "local":
        hidden = (_local_layer_size(network, n_inputs, image_shape), *hidden)
    layered = layered_topology(
        n_inputs,
        hidden,
        n_outputs,
        hidden_activation=network.hidden_activation,
        output_activation=network.output_activation,
        bias=network.bias,
        ticks=network.ticks,
    )
    rng = np.random.default_rng(seed)

    if network.topology == "recurrent":
        return recurrent_topology(layered, network.recurrent_edges)
    if network.topology == "sparse":
        return sparse_topology(layered, network.density, rng)
    if network.topology == "small_world":
        return small_world_topology(layered, network.neighbours, network.rewire, rng)
    if network.topology == "local":
        mask = receptive_field_mask(image_shape, network.receptive_field, network.stride, network.channels)
        connectivity = [None] * len(layered.blocks)
        connectivity[layered.blocks.index((layered.input_group, 1))] = FixedMask(mask)
        return dataclasses.replace(layered, connectivity=tuple(connectivity))
    return layered


def _local_layer_size(network: NetworkConfig, n_inputs: int, image_shape: tuple[int, int] | None) -> int:
    if image_shape is None:
        raise ConfigError(
            f"network.topology='local' needs image inputs, but this task's {n_inputs} inputs are not an image; "
            "use a task with images such as digits, or another topology"
        )
    if network.receptive_field > min(image_shape):
        raise ConfigError(
            f"network.receptive_field={network.receptive_field} is larger than the {image_shape[0]}x{image_shape[1]} "
            f"input image; use a value up to {min(image_shape)}"
        )
    rows, columns = patch_grid(image_shape, network.receptive_field, network.stride)
    return rows * columns * network.channels
