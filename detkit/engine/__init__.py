"""Training and evaluation: the loop, its hooks, launching processes, and the default trainer."""

from detkit.engine.defaults import (
    DefaultTrainer,
    default_argument_parser,
    default_setup,
    seed_all_rng,
    setup,
)
from detkit.engine.hooks import (
    EvalHook,
    IterationTimer,
    LRScheduler,
    PeriodicCheckpointer,
    PeriodicWriter,
    TrainingCurves,
)
from detkit.engine.launch import launch
from detkit.engine.train_loop import HookBase, SimpleTrainer, TrainerBase

__all__ = [
    "DefaultTrainer",
    "EvalHook",
    "HookBase",
    "IterationTimer",
    "LRScheduler",
    "PeriodicCheckpointer",
    "PeriodicWriter",
    "SimpleTrainer",
    "TrainerBase",
    "TrainingCurves",
    "default_argument_parser",
    "default_setup",
    "launch",
    "seed_all_rng",
    "setup",
]
