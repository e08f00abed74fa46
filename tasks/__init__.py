"""Task suite, installed as ``neuroevo.tasks``; tasks are selected by name in configs."""

from __future__ import annotations

from typing import Any

from neuroevo.tasks.continual import ContinualDigitsConfig, ContinualDigitsTask, ContinualInstance
from neuroevo.tasks.control import ControlConfig, ControlTask
from neuroevo.tasks.dataset import DatasetError, UserDatasetConfig, UserDatasetTask
from neuroevo.tasks.digits import DigitsConfig, DigitsTask
from neuroevo.tasks.fewshot import ClassPools, FewShotClassification, FewShotInstance
from neuroevo.tasks.sinusoid import SinusoidConfig, SinusoidInstance, SinusoidTask
from neuroevo.tasks.sklearn_tables import BreastCancerConfig, IrisConfig, SklearnTableTask, WineConfig
from neuroevo.tasks.spike_patterns import SpikePatternsConfig, SpikePatternsTask

TASK_CONFIGS: dict[str, type] = {
    "digits": DigitsConfig,
    "iris": IrisConfig,
    "wine": WineConfig,
    "breast_cancer": BreastCancerConfig,
    "dataset": UserDatasetConfig,
    "sinusoid": SinusoidConfig,
    "continual_digits": ContinualDigitsConfig,
    "control": ControlConfig,
    "spike_patterns": SpikePatternsConfig,
}
_TASK_CLASSES: dict[type, type] = {
    DigitsConfig: DigitsTask,
    IrisConfig: SklearnTableTask,
    WineConfig: SklearnTableTask,
    BreastCancerConfig: SklearnTableTask,
    UserDatasetConfig: UserDatasetTask,
    SinusoidConfig: SinusoidTask,
    ContinualDigitsConfig: ContinualDigitsTask,
    ControlConfig: ControlTask,
    SpikePatternsConfig: SpikePatternsTask,
}


def task_name(config: Any) -> str:
    """Registry name of a task config instance."""
    for name, cls in TASK_CONFIGS.items():
        if isinstance(config, cls):
            return name
    raise KeyError(f"unregistered task config {type(config).__name__}")


def task_signals(name: str) -> tuple[str, ...]:
    """Return the learning signals (``error``, ``reward``) that the task registered as ``name`` provides to rules."""
    return tuple(getattr(_TASK_CLASSES[TASK_CONFIGS[name]], "signals", ()))


def build_task(config: Any) -> Any:
    """Instantiate the task that ``config`` configures; impossible sizes raise ConfigError."""
    return _TASK_CLASSES[type(config)].from_config(config)


__all__ = [
    "BreastCancerConfig",
    "ControlConfig",
    "ControlTask",
    "ClassPools",
    "ContinualDigitsConfig",
    "ContinualDigitsTask",
    "ContinualInstance",
    "DatasetError",
    "DigitsConfig",
    "DigitsTask",
    "FewShotClassification",
    "FewShotInstance",
    "IrisConfig",
    "SinusoidConfig",
    "SinusoidInstance",
    "SinusoidTask",
    "SklearnTableTask",
    "SpikePatternsConfig",
    "SpikePatternsTask",
    "UserDatasetConfig",
    "UserDatasetTask",
    "WineConfig",
    "TASK_CONFIGS",
    "build_task",
    "task_name",
    "task_signals",
]
