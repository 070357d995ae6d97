"""Training and evaluation: the loop, its hooks, launching processes, the default trainer,
4-step alternating training and the single-image predictor."""

from detkit.engine.alternating import AlternatingTrainer
from detkit.engine.defaults import DefaultTrainer
from detkit.engine.hooks import (
    EvalHook,
    IterationTimer,
    LRScheduler,
    PeriodicCheckpointer,
    PeriodicWriter,
    TrainingCurves,
)
from detkit.engine.launch import launch
from detkit.engine.predictor import DefaultPredictor
from detkit.engine.run_setup import default_argument_parser, default_setup, seed_all_rng, setup
from detkit.engine.train_loop import HookBase, SimpleTrainer, TrainerBase

__all__ = [
    "AlternatingTrainer",
    "DefaultPredictor",
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
