"""DefaultTrainer's override points (model, solver, loaders, evaluator, hooks), ``test()``
with given evaluators, and the statistics of the model in the metrics a run writes."""

import json
import logging
import os

import pytest
import torch

from detkit.config import get_cfg
from detkit.data import DatasetMapper, build_detection_train_loader
from detkit.engine import DefaultTrainer, HookBase
from detkit.evaluation import DatasetEvaluator
from detkit.utils.events import get_event_storage

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

STATISTICS = [
    "rpn/num_pos_anchors",
    "rpn/num_neg_anchors",
    "roi_head/num_fg_samples",
    "roi_head/num_bg_samples",
    "fast_rcnn/cls_accuracy",
    "fast_rcnn/fg_cls_accuracy",
    "fast_rcnn/false_negative",
]


def quickstart_cfg(tiny_shapes, output_dir, max_iter):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs/quickstart/shapes.yaml"))
    overrides = {
        "DATASETS.TRAIN": [tiny_shapes[0]],
        "DATASETS.TEST": [],
        "MODEL.DEVICE": "cpu",
        "MODEL.TINY.CHANNELS": [8, 16, 16, 32],
        "SOLVER.IMS_PER_BATCH": 2,
        "SOLVER.MAX_ITER": max_iter,
        "DATALOADER.NUM_WORKERS": 0,
        "OUTPUT_DIR": str(output_dir),
        "SEED": 3,
    }
    cfg.merge_from_list([x for pair in overrides.items() for x in pair])
    return cfg


class CountingEvaluator(DatasetEvaluator):
    """Counts the images it is shown; its metric is that count."""

    def __init__(self):
        self.images = 0

    def reset(self):
        self.images = 0

    def process(self, inputs, outputs):
        self.images += len(inputs)

    def evaluate(self):
        return {"count": {"images": float(self.images)}}


class CountingMapper(DatasetMapper):
    calls = 0

    def __call__(self, dataset_dict):
        type(self).calls += 1
        return super().__call__(dataset_dict)


class RecordingHook(HookBase):
    def __init__(self, name, log):
        self.name, self.log = name, log

    def after_step(self):
        self.log.append((self.name, self.trainer.iter))


def test_subclass_overrides_loader_evaluator_and_hooks(tiny_shapes, tmp_path, caplog):
    log = []

    class Trainer(DefaultTrainer):
        @classmethod
        def build_train_loader(cls, cfg, start_iter=0):
            return build_detection_train_loader(cfg, CountingMapper(cfg, True), start_iter)

        @classmethod
        def build_evaluator(cls, cfg, dataset_name, output_folder=None):
            return CountingEvaluator()

        def build_hooks(self):
            return [*super().build_hooks(), RecordingHook("extended", log)]

    cfg = quickstart_cfg(tiny_shapes, tmp_path, 3)
    cfg.merge_from_list(["DATASETS.TEST", [tiny_shapes[1]], "TEST.EVAL_PERIOD", 0])
    trainer = Trainer(cfg)
    trainer.register_hooks([RecordingHook("registered", log), None])
    with caplog.at_level(logging.INFO, logger="detkit"):
        results = trainer.train()
    # The custom mapper made every training image (3 iterations x 2 images, and the
    # prefetching of the loader at most a few more).
    assert CountingMapper.calls >= 6
    # The final evaluation used the custom evaluator on the 4 test images.
    assert results["count"] == {"images": 4.0}
    # build_hooks' extension, then the registered hook, at every iteration.
    assert log == [(name, it) for it in range(3) for name in ("extended", "registered")]
    # The model's statistics reach metrics.json (medians), beside the losses.
    lines = [json.loads(x) for x in (tmp_path / "metrics.json").read_text().splitlines()]
    last = [r for r in lines if "loss_cls" in r][-1]
    for name in STATISTICS:
        assert name in last, name
    assert 0.0 <= last["fast_rcnn/cls_accuracy"] <= 1.0
    assert [r["count/images"] for r in lines if "count/images" in r] == [4.0]
    # ... and the console line, printed once for the last iteration.
    console = [r.getMessage() for r in caplog.records if "iter: 3/3" in r.getMessage()]
    assert len(console) == 1
    assert "fast_rcnn/cls_accuracy" in console[0] and "rpn/num_pos_anchors" in console[0]
    with pytest.raises(RuntimeError, match="outside training"):
        get_event_storage()


def test_resumed_loader_gets_the_start_batch(tiny_shapes, tmp_path, caplog):
    asked = []

    class WithStart(DefaultTrainer):
        @classmethod
        def build_train_loader(cls, cfg, start_iter=0):
            asked.append(start_iter)
            return []

    class WithoutStart(DefaultTrainer):  # a detectron2-style override
        @classmethod
        def build_train_loader(cls, cfg):
            asked.append("no start_iter")
            return []

    cfg = quickstart_cfg(tiny_shapes, tmp_path, 4)
    cfg.merge_from_list(["SOLVER.ITER_SIZE", 2])
    trainer = WithStart(cfg)
    trainer.start_iter = 3  # as resume_or_load sets it
    trainer._train_loader()
    assert asked == [6]  # 3 updates x ITER_SIZE 2 batches already used
    trainer = WithoutStart(cfg)
    trainer.start_iter = 3
    with caplog.at_level(logging.WARNING, logger="detkit"):
        trainer._train_loader()
    assert asked[-1] == "no start_iter"
    assert "restarts the data order" in caplog.text


def test_test_takes_one_evaluator_per_dataset_or_a_single_one(tiny_shapes, tmp_path):
    cfg = quickstart_cfg(tiny_shapes, tmp_path, 1)
    cfg.merge_from_list(["DATASETS.TEST", [tiny_shapes[1]]])
    model = DefaultTrainer.build_model(cfg).eval()
    single = CountingEvaluator()
    assert DefaultTrainer.test(cfg, model, single)["count"] == {"images": 4.0}
    assert DefaultTrainer.test(cfg, model, [CountingEvaluator()])["count"] == {"images": 4.0}
    with pytest.raises(ValueError, match="2 evaluators for the 1 datasets"):
        DefaultTrainer.test(cfg, model, [single, single])
    # Two test datasets: results by dataset name, each with its own evaluator.
    cfg.merge_from_list(["DATASETS.TEST", [tiny_shapes[1], tiny_shapes[0]]])
    results = DefaultTrainer.test(cfg, model, [CountingEvaluator(), CountingEvaluator()])
    assert list(results) == [tiny_shapes[1], tiny_shapes[0]]
    assert results[tiny_shapes[1]]["count"] == {"images": 4.0}
    assert results[tiny_shapes[0]]["count"] == {"images": 16.0}
    with pytest.raises(ValueError, match="one per dataset"):
        DefaultTrainer.test(cfg, model, single)


def test_override_of_model_optimizer_and_scheduler_is_used(tiny_shapes, tmp_path):
    built = []

    class Trainer(DefaultTrainer):
        @classmethod
        def build_model(cls, cfg):
            built.append("model")
            return super().build_model(cfg)

        @classmethod
        def build_optimizer(cls, cfg, model):
            built.append("optimizer")
            return torch.optim.SGD(model.parameters(), lr=0.5)

        @classmethod
        def build_lr_scheduler(cls, cfg, optimizer):
            built.append("scheduler")
            return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)

    trainer = Trainer(quickstart_cfg(tiny_shapes, tmp_path, 1))
    assert built == ["model", "optimizer", "scheduler"]
    assert isinstance(trainer.scheduler, torch.optim.lr_scheduler.ConstantLR)
    assert trainer.optimizer.param_groups[0]["lr"] == 0.5
    # The checkpointer saves what the overrides built.
    assert trainer.checkpointer.checkpointables["optimizer"] is trainer.optimizer
