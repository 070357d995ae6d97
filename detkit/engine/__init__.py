"""Training and evaluation: the loop, its hooks, launching processes, the default trainer and
4-step alternating training."""

from detkit.engine.alternating import AlternatingTrainer
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
    "AlternatingTrainer",
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
