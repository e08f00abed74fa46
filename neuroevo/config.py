"""Run configuration: YAML files and ``--set key=value`` overrides, validated into frozen dataclasses.

Every section is a frozen dataclass, so a validated config is hashable and its sizes can be
static arguments of jitted functions. Validation is strict: an unknown key, a value of the
wrong type or an impossible size raises :class:`ConfigError` naming the key and the fix.
The ``task`` and ``rule`` sections are validated by the config class that the named task or
rule family registers, so each family checks its own options.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from neuroevo.errors import ConfigError
from neuroevo.structural import StructureConfig

ACTIVATIONS = ("tanh", "relu", "sigmoid", "identity")
_MAX_TICKS = 1000  # every tick runs every block once per presentation, so more is never useful here
_INT_LIMIT = 2**31  # sizes, counts and seeds must fit in int32, as JAX stores them
OUTPUT_ACTIVATIONS = ("softmax", "tanh", "identity")


# Options that only one topology reads; giving one of them with another topology is an error.
_TOPOLOGY_OPTIONS = {
    "recurrent": ("recurrent",),
    "sparse": ("density",),
    "small_world": ("neighbours", "rewire"),
    "local": ("receptive_field", "stride", "channels"),
}


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Graph network: layers, topology and weight initialisation (see neuroevo/topologies.py)."""

    hidden: tuple[int, ...] = ()  # neurons per hidden layer, input to output (after the local layer for topology local)
    hidden_activation: str = "tanh"
    output_activation: str = "softmax"
    bias: bool = True  # one constant-1 neuron with an edge to every non-input neuron
    ticks: int = 0  # propagation ticks per presentation; 0 means the number of weight layers
    init: Literal["normal", "uniform", "zeros"] = "normal"
    init_gain: float = 1.0  # weight std is init_gain / sqrt(fan_in), fan_in counting existing edges
    trace_decay: float = 0.8  # features pre_trace, post_trace: trace <- trace_decay * trace + (1 - trace_decay) * a
    neurons: Literal["rate", "lif"] = "rate"  # lif: leaky integrate-and-fire neurons configured by the spiking section
    topology: Literal["layered", "recurrent", "sparse", "small_world", "local"] = "layered"
    recurrent: tuple[str, ...] = ()  # recurrent: extra edges "src->dst", src the same or a later group; empty: each hidden layer feeds itself
    density: float = 0.25  # sparse: share of the possible edges of each non-bias block that exist
    neighbours: int = 4  # small_world: lattice neighbours of each hidden neuron (even)
    rewire: float = 0.1  # small_world: probability that a lattice link is rewired
    receptive_field: int = 3  # local: side in pixels of the square patch that feeds each local neuron
    stride: int = 1  # local: pixels between neighbouring patches
    channels: int = 1  # local: neurons per patch

    @property
    def n_weight_layers(self) -> int:
        """Blocks on the path from input to output; the local topology adds its local layer."""
        return len(self.hidden) + 1 + (self.topology == "local")

    @property
    def group_order(self) -> tuple[str, ...]:
        """Names of the non-input groups, input to output, as the topology builders name them."""
        return (*(f"hidden{index}" for index in range(self.n_weight_layers - 1)), "output")

    @property
    def recurrent_edges(self) -> tuple[tuple[str, str], ...]:
        """(src, dst) group names of the recurrent blocks; the default is each hidden layer feeding itself."""
        if not self.recurrent:
            return tuple((name, name) for name in self.group_order[:-1])
        return tuple(tuple(part.strip() for part in edge.split("->")) for edge in self.recurrent)

    def validate(self) -> None:
        if any(width < 1 for width in self.hidden):
            raise ConfigError(f"network.hidden={list(self.hidden)} has a layer with fewer than 1 neuron; use positive widths")
        _check_choice("network.hidden_activation", self.hidden_activation, ACTIVATIONS)
        _check_choice("network.output_activation", self.output_activation, OUTPUT_ACTIVATIONS)
        layers = self.n_weight_layers
        if self.ticks < 0:
            raise ConfigError(f"network.ticks={self.ticks} is negative; use 0 (one tick per layer) or a positive count")
        if self.ticks > _MAX_TICKS:
            raise ConfigError(f"network.ticks={self.ticks} is more than {_MAX_TICKS}; use 0 (one tick per layer) or a count up to {_MAX_TICKS}")
        if 0 < self.ticks < layers:
            raise ConfigError(
                f"network.ticks={self.ticks} is fewer than the {layers} weight layers, so the input "
                f"never reaches the output; use ticks >= {layers} or 0"
            )
        if self.init_gain < 0:
            raise ConfigError(f"network.init_gain={self.init_gain} is negative; use a value >= 0")
        if not 0.0 <= self.trace_decay < 1.0:
            raise ConfigError(f"network.trace_decay={self.trace_decay} must be in [0, 1); 0 makes a trace equal the current activation")
        self._validate_topology_options()

    def _validate_topology_options(self) -> None:
        defaults = NetworkConfig()
        for topology, options in _TOPOLOGY_OPTIONS.items():
            for option in options:
                if topology != self.topology and getattr(self, option) != getattr(defaults, option):
                    raise ConfigError(
                        f"network.{option} only applies to network.topology={topology!r}, but the topology is "
                        f"{self.topology!r}; remove network.{option} or set network.topology={topology}"
                    )

        if self.topology == "recurrent":
            self._validate_recurrent()
        elif self.topology == "sparse" and not 0.0 < self.density <= 1.0:
            raise ConfigError(f"network.density={self.density} is outside (0, 1]; use the share of possible edges that exist, e.g. 0.25")
        elif self.topology == "small_world":
            if not self.hidden:
                raise ConfigError("network.topology='small_world' links the neurons of each hidden layer, but network.hidden is empty; add a layer, e.g. network.hidden=[32]")
            if self.neighbours < 2 or self.neighbours % 2 or self.neighbours >= min(self.hidden):
                raise ConfigError(
                    f"network.neighbours={self.neighbours} must be even, at least 2 and below the smallest hidden layer "
                    f"({min(self.hidden)} neurons); use e.g. 4"
                )
            if not 0.0 <= self.rewire <= 1.0:
                raise ConfigError(f"network.rewire={self.rewire} is not a probability; use a value in [0, 1], e.g. 0.1")
        elif self.topology == "local":
            for option in _TOPOLOGY_OPTIONS["local"]:
                if getattr(self, option) < 1:
                    raise ConfigError(f"network.{option}={getattr(self, option)} must be at least 1")

    def _validate_recurrent(self) -> None:
        order = self.group_order
        if not self.recurrent and len(order) == 1:
            raise ConfigError(
                "network.topology='recurrent' with no hidden layer needs explicit edges; "
                "add network.hidden, or set network.recurrent=['output->output']"
            )
        seen = set()
        for text in self.recurrent:
            parts = [part.strip() for part in text.split("->")]
            if len(parts) != 2 or any(part not in order for part in parts):
                raise ConfigError(f"network.recurrent entry {text!r} is not 'src->dst' with src and dst among {', '.join(order)}")
            src, dst = parts
            if order.index(src) < order.index(dst):
                raise ConfigError(
                    f"network.recurrent entry {text!r} leads forward, which is not a recurrent edge; "
                    f"list edges from a group to itself or to an earlier group, e.g. '{dst}->{src}'"
                )
            if (src, dst) in seen:
                raise ConfigError(f"network.recurrent lists {src}->{dst} twice; list each edge once")
            seen.add((src, dst))


@dataclasses.dataclass(frozen=True)
class SignalConfig:
    """Feedback pathway that carries the output error to hidden neurons."""

    feedback: Literal["none", "broadcast", "random_feedback", "direct_random_feedback", "symmetric"] = "random_feedback"


@dataclasses.dataclass(frozen=True)
class SpikingConfig:
    """Leaky integrate-and-fire dynamics, spike coding and timing features (``network.neurons: lif``).

    Times are in milliseconds; the simulation advances ``dt`` per tick.
    """

    ticks: int = 20  # simulation ticks per presentation
    dt: float = 1.0  # ms per tick
    tau_mem: float = 10.0  # membrane time constant, ms
    v_threshold: float = 1.0  # a neuron spikes when its membrane potential reaches this value
    v_reset: float = 0.0  # membrane potential after a spike and during the refractory period
    refractory: int = 1  # ticks after a spike during which the neuron ignores input and cannot spike
    encoder: Literal["rate", "latency", "raster"] = "rate"  # raster: the task presents spike rasters (ticks * n_inputs values)
    signed_inputs: bool = False  # two input neurons per input value, for its positive and its negative part
    max_rate: float = 0.2  # rate encoder: spikes per ms of an input of value 1 (0.2 is 200 Hz)
    readout: Literal["count", "first_spike"] = "count"  # output logits from spike counts or from first-spike times
    readout_scale: float = 1.0  # logits = readout_scale * spike count (or * ticks left after the first spike)
    tau_plus: float = 10.0  # ms, decay of the presynaptic spike trace (potentiation window of STDP)
    tau_minus: float = 10.0  # ms, decay of the postsynaptic spike trace (depression window of STDP)
    max_delay: int = 0  # synaptic delays drawn per edge from 0..max_delay ticks; 0 turns delays off

    def validate(self) -> None:
        if self.ticks < 1:
            raise ConfigError(f"spiking.ticks={self.ticks} must be at least 1")
        if self.ticks > _MAX_TICKS:
            raise ConfigError(f"spiking.ticks={self.ticks} is more than {_MAX_TICKS}; use at most {_MAX_TICKS}")
        for name in ("dt", "tau_mem", "max_rate", "readout_scale", "tau_plus", "tau_minus"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"spiking.{name}={getattr(self, name)} must be positive")
        if self.v_reset >= self.v_threshold:
            raise ConfigError(f"spiking.v_reset={self.v_reset} must be below spiking.v_threshold={self.v_threshold}")
        if self.refractory < 0:
            raise ConfigError(f"spiking.refractory={self.refractory} is negative; use 0 (no refractory period) or a tick count")
        if self.max_rate * self.dt > 1.0:
            raise ConfigError(
                f"spiking.max_rate={self.max_rate} with dt={self.dt} gives a spike probability {self.max_rate * self.dt:g} per tick, "
                f"above 1; use max_rate <= {1.0 / self.dt:g}"
            )
        if not 0 <= self.max_delay < self.ticks:
            raise ConfigError(f"spiking.max_delay={self.max_delay} must be in [0, ticks); use 0 for no delays or fewer than {self.ticks} ticks")
        if self.signed_inputs and self.encoder == "raster":
            raise ConfigError("spiking.signed_inputs=true splits input values by sign, but spiking.encoder=raster presents spikes; set spiking.signed_inputs=false")


@dataclasses.dataclass(frozen=True)
class MetaGradientConfig:
    """Options of the meta-gradient outer loop (``evolution.method: meta_gradient``)."""

    truncation: int = 0  # lifetime steps, counted from the end, that gradients flow through; 0 means all
    clip_norm: float = 1.0  # maximum global L2 norm of each meta-gradient (optax.clip_by_global_norm)

    def validate(self) -> None:
        if self.truncation < 0:
            raise ConfigError(f"evolution.meta_gradient.truncation={self.truncation} is negative; use 0 (whole lifetime) or a positive step count")
        if self.clip_norm <= 0:
            raise ConfigError(f"evolution.meta_gradient.clip_norm={self.clip_norm} must be positive")


_ES_ONLY = ("strategy", "population", "std", "lifetime_batch")  # options that only an evolution strategy reads


@dataclasses.dataclass(frozen=True)
class EvolutionConfig:
    """Outer loop over the rule parameters: an evosax strategy (``es``) or meta-gradient descent."""

    method: Literal["es", "meta_gradient"] = "es"
    strategy: str = "Open_ES"
    population: int = 64
    generations: int = 300  # meta_gradient: optimizer steps
    lifetimes_per_member: int = 8  # task instances each member is scored on per generation; meta_gradient: per step
    lifetime_batch: int | None = None  # lifetimes per member run at once, the rest in sequence; None: all on GPU/TPU, as many as fit in cache on CPU
    std: float = 0.07  # search noise (std_schedule or std_init of the strategy)
    optimizer: Literal["adam", "sgd"] = "adam"  # for strategies that take an optax optimizer
    learning_rate: float = 0.03
    fitness: Literal["accuracy", "neg_loss"] = "accuracy"  # return tasks ignore it: their fitness is the mean return
    eval_every: int = 25  # generations between evaluations of the strategy center
    eval_lifetimes: int = 64  # lifetimes per split in those evaluations
    checkpoint_every: int = 25  # generations between checkpoints (and always at the end)
    meta_gradient: MetaGradientConfig = MetaGradientConfig()

    def validate(self) -> None:
        for name in ("population", "generations", "lifetimes_per_member", "eval_every", "eval_lifetimes", "checkpoint_every"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"evolution.{name}={value} must be at least 1")
        if self.method == "es" and self.population < 2:
            raise ConfigError(f"evolution.population={self.population} is too small: an evolution strategy needs at least 2 members to compare; use e.g. 16")
        if self.lifetime_batch is not None and self.lifetime_batch < 1:
            raise ConfigError(f"evolution.lifetime_batch={self.lifetime_batch} must be at least 1, or null to choose by device")
        if self.std <= 0:
            raise ConfigError(f"evolution.std={self.std} must be positive")
        if self.learning_rate <= 0:
            raise ConfigError(f"evolution.learning_rate={self.learning_rate} must be positive")
        if self.method == "meta_gradient":
            defaults = {field.name: field.default for field in dataclasses.fields(self)}
            for name in _ES_ONLY:
                if getattr(self, name) != defaults[name]:
                    raise ConfigError(f"evolution.{name}={getattr(self, name)!r} has no effect with evolution.method='meta_gradient'; remove it or use method 'es'")
        elif self.meta_gradient != MetaGradientConfig():
            raise ConfigError("evolution.meta_gradient options have no effect with evolution.method='es'; remove them or set evolution.method=meta_gradient")


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """Held-out comparison at the end of a run."""

    lifetimes: int = 256  # meta-test lifetimes per method
    sweep_lifetimes: int = 128  # meta-train lifetimes used to choose each baseline's learning rate
    learning_rates: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
    multi_pass_epochs: int = 20

    def validate(self) -> None:
        for name in ("lifetimes", "sweep_lifetimes", "multi_pass_epochs"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"evaluation.{name}={value} must be at least 1")
        if self.lifetimes < 2:
            raise ConfigError("evaluation.lifetimes must be at least 2 to compute a confidence interval")
        if not self.learning_rates or any(lr <= 0 for lr in self.learning_rates):
            raise ConfigError(f"evaluation.learning_rates={list(self.learning_rates)} must be a non-empty list of positive values")


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole run. ``task`` and ``rule`` are the registered config classes of the named task and rule."""

    task: Any
    rule: Any
    seed: int = 0
    network: NetworkConfig = NetworkConfig()
    signal: SignalConfig = SignalConfig()
    evolution: EvolutionConfig = EvolutionConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    spiking: SpikingConfig = SpikingConfig()
    structure: StructureConfig = StructureConfig()


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(choices)}")


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return " | ".join(repr(choice) for choice in get_args(annotation))
    if origin is tuple:
        return f"list of {_type_name(get_args(annotation)[0])}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in get_args(annotation))
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _convert(key: str, value: Any, annotation: Any, minimum: int = -_INT_LIMIT + 1) -> Any:
    """Check ``value`` against a field annotation and convert lists to tuples.

    ``minimum`` is the lowest integer that the out-of-range message offers; the section's
    ``validate`` enforces it for values inside the int32 range.
    """
    origin = get_origin(annotation)
    if origin is Literal:
        if value not in get_args(annotation):
            raise ConfigError(f"{key}={value!r} is not one of {_type_name(annotation)}")
        return value
    if origin in (typing.Union, types.UnionType):
        for option in get_args(annotation):
            try:
                return _convert(key, value, option, minimum)
            except ConfigError:
                continue
        raise ConfigError(f"{key}={value!r} has the wrong type; expected {_type_name(annotation)}")
    if origin is tuple:
        (item_type, _ellipsis) = get_args(annotation)
        if not isinstance(value, (list, tuple)):
            example = "[a, b]" if item_type is str else "[1, 2]"
            raise ConfigError(f"{key}={value!r} has the wrong type; expected a {_type_name(annotation)}, e.g. {example}")
        return tuple(_convert(f"{key}[{index}]", item, item_type) for index, item in enumerate(value))
    if annotation is type(None):
        if value is not None:
            raise ConfigError(f"{key}={value!r} must be null")
        return None
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} has the wrong type; expected true or false")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r} has the wrong type; expected an integer")
        if not -_INT_LIMIT < value < _INT_LIMIT:
            raise ConfigError(f"{key}={value} is out of range; use an integer between {minimum} and {_INT_LIMIT - 1}")
        return value
    if annotation is float:
        if isinstance(value, str):
            # PyYAML reads exponents without a dot or sign (1e-3, 1.0e30) as strings.
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key}={value!r} has the wrong type; expected a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={value!r} has the wrong type; expected a number")
        if not math.isfinite(value):
            raise ConfigError(f"{key}={value!r} is not a finite number; use a finite value")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r} has the wrong type; expected a string")
        return value
    raise TypeError(f"unsupported config annotation {annotation!r} for {key}")


def build_section(cls: type, data: Any, prefix: str) -> Any:
    """Validate a mapping against the dataclass ``cls`` and return an instance.

    Fields of ``cls`` that are dataclasses themselves are built recursively. The instance's
    ``validate()`` method, when it has one, checks values that depend on each other.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping of keys to values, got {data!r}")
    hints = get_type_hints(cls)
    fields = {field.name: field for field in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            full_key = f"{prefix}.{key}" if prefix else str(key)
            valid = [*getattr(cls, "handled_elsewhere", ()), *fields]
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown config key {full_key!r}{hint}. Valid keys here: {', '.join(valid)}")
    values = {}
    for name, value in data.items():
        full_key = f"{prefix}.{name}" if prefix else name
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            values[name] = build_section(annotation, value, full_key)
        else:
            values[name] = _convert(full_key, value, annotation, fields[name].metadata.get("minimum", -_INT_LIMIT + 1))
    section = cls(**values)
    if hasattr(section, "validate"):
        section.validate()
    return section


def _build_named_section(data: Any, section: str, registry: dict[str, type], default: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{section} must be a mapping with a 'name' key, got {data!r}")
    data = dict(data)
    name = data.pop("name", default)
    if name not in registry:
        raise ConfigError(f"{section}.name={name!r} is not a registered {section}; choose one of {', '.join(sorted(registry))}")
    return build_section(registry[name], data, section)


def config_from_dict(data: Any) -> Config:
    """Validate a raw mapping (parsed YAML plus overrides) into a :class:`Config`."""
    from neuroevo.rules import RULE_CONFIGS
    from neuroevo.tasks import TASK_CONFIGS

    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
    data = dict(data)
    task = _build_named_section(data.pop("task", None), "task", TASK_CONFIGS, "digits")
    rule = _build_named_section(data.pop("rule", None), "rule", RULE_CONFIGS, "mlp")
    return _assemble(data, task, rule)


@dataclasses.dataclass(frozen=True)
class _ConfigWithoutPlugins:
    handled_elsewhere = ("task", "rule")  # top-level sections that config_from_dict validates before this class
    seed: int = dataclasses.field(default=0, metadata={"minimum": 0})
    network: NetworkConfig = NetworkConfig()
    signal: SignalConfig = SignalConfig()
    evolution: EvolutionConfig = EvolutionConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    spiking: SpikingConfig = SpikingConfig()
    structure: StructureConfig = StructureConfig()

    def validate(self) -> None:
        if self.seed < 0:
            raise ConfigError(f"seed={self.seed} is negative; use an integer >= 0")
        if self.network.neurons == "rate" and self.spiking != SpikingConfig():
            raise ConfigError("the spiking section only applies to spiking neurons; remove it or set network.neurons=lif")
        if self.network.neurons == "lif" and self.evolution.method == "meta_gradient":
            raise ConfigError("network.neurons=lif has no gradient through spike thresholds; use evolution.method=es")


def _assemble(data: dict, task: Any, rule: Any) -> Config:
    rest = build_section(_ConfigWithoutPlugins, data, "")
    return Config(
        task=task,
        rule=rule,
        seed=rest.seed,
        network=rest.network,
        signal=rest.signal,
        evolution=rest.evolution,
        evaluation=rest.evaluation,
        spiking=rest.spiking,
        structure=rest.structure,
    )


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value``; the value is read as YAML, so ``[16, 16]`` is a list."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r} is not of the form key=value, e.g. --set evolution.population=32")
    key, raw_value = text.split("=", 1)
    path = key.strip().split(".")
    if not all(path):
        raise ConfigError(f"--set {text!r} has an empty key part; write e.g. evolution.population=32")
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({error.problem})") from None
    return path, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Return a copy of ``data`` with every ``key=value`` override applied."""
    data = _deep_copy(data)
    for text in overrides:
        path, value = parse_override(text)
        keys = _section_keys(path)
        if keys is not None and value is not None and not isinstance(value, dict):
            section = ".".join(path)
            raise ConfigError(f"--set {text!r}: {section} is a section with keys ({keys}), not a value; set one key, e.g. --set {section}.KEY=VALUE")
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return data


def _section_keys(path: list[str]) -> str | None:
    """Return the keys of the config section at ``path`` as text, or ``None`` when ``path`` names no section."""
    if path in (["task"], ["rule"]):
        return f"name and the options of the named {path[0]}"
    section: Any = _ConfigWithoutPlugins
    for part in path:
        section = get_type_hints(section).get(part)
        if not dataclasses.is_dataclass(section):
            return None
    return ", ".join(field.name for field in dataclasses.fields(section))


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {key: _deep_copy(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_deep_copy(value) for value in data]
    return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that rejects a key repeated in one mapping instead of keeping the last value."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice in one section", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> dict:
    """Read a YAML mapping with ``yaml.safe_load``; a missing or malformed file raises ConfigError."""
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found; pass a YAML file or a bundled config name such as 'digits'")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as error:
        where = f" at line {error.problem_mark.line + 1}" if error.problem_mark else ""
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{where}: {error.problem or error.context}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must contain a mapping of sections, got {type(data).__name__}")
    return data


def config_to_dict(config: Config) -> dict:
    """Plain mapping of a config (lists instead of tuples), with the task and rule names included."""
    from neuroevo.rules import rule_name
    from neuroevo.tasks import task_name

    def plain(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [plain(item) for item in value]
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        return value

    data = plain(dataclasses.asdict(config))
    data["task"] = {"name": task_name(config.task), **data["task"]}
    data["rule"] = {"name": rule_name(config.rule), **data["rule"]}
    return data
