"""--resume continues exactly: same iteration, same optimizer state, same next batch, and
the same weights as a run that was never interrupted."""

import os

import torch

from detkit.config import get_cfg
from detkit.data import build_detection_train_loader
from detkit.engine import DefaultTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def quickstart_cfg(tiny_shapes, output_dir, max_iter):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs/quickstart/shapes.yaml"))
    cfg.merge_from_list(
        [
            "DATASETS.TRAIN",
            [tiny_shapes[0]],
            "DATASETS.TEST",
            [],
            "MODEL.DEVICE",
            "cpu",
            "MODEL.TINY.CHANNELS",
            [8, 16, 16, 32],
            "SOLVER.IMS_PER_BATCH",
            2,
            "SOLVER.MAX_ITER",
            max_iter,
            "SOLVER.STEPS",
            [3],
            "SOLVER.WARMUP_ITERS",
            2,
            "SOLVER.CHECKPOINT_PERIOD",
            2,
            "DATALOADER.NUM_WORKERS",
            0,
            "OUTPUT_DIR",
            str(output_dir),
            "SEED",
            3,
        ]
    )
    return cfg


def train(cfg, resume):
    torch.manual_seed(0)
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    start = trainer.start_iter
    trainer.train()
    return trainer, start


def test_resume_continues_exactly(tiny_shapes, tmp_path):
    # Uninterrupted: 4 iterations.
    full, _ = train(quickstart_cfg(tiny_shapes, tmp_path / "full", 4), resume=False)
    # Interrupted after 2 iterations (its last checkpoint is iteration 1), then resumed to 4.
    cfg_short = quickstart_cfg(tiny_shapes, tmp_path / "cut", 2)
    short, _ = train(cfg_short, resume=False)
    saved = torch.load(tmp_path / "cut" / "model_final.pth", weights_only=True)
    assert saved["iteration"] == 1
    cfg_resumed = quickstart_cfg(tiny_shapes, tmp_path / "cut", 4)
    torch.manual_seed(12345)  # whatever the RNG was, the checkpoint restores it
    resumed = DefaultTrainer(cfg_resumed)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2
    # Same optimizer state: every buffer saved at iteration 1 (SGD's momentum, AdamW's
    # moments and step counts).
    states = resumed.optimizer.state_dict()["state"].values()
    for p_state, saved_state in zip(states, saved["optimizer"]["state"].values()):
        assert p_state.keys() == saved_state.keys() and saved_state
        for key, value in saved_state.items():
            assert torch.equal(torch.as_tensor(p_state[key]), torch.as_tensor(value)), key
    assert resumed.scheduler.last_epoch == saved["scheduler"]["last_epoch"] == 2
    # Same next batch: the resumed loader's first batch is batch 2 of the full stream,
    # pixels (augmentation included) and boxes.
    stream = iter(build_detection_train_loader(cfg_resumed))
    expected = [next(stream) for _ in range(3)][2]
    first = next(iter(build_detection_train_loader(cfg_resumed, start_iter=2)))
    assert [d["image_id"] for d in first] == [d["image_id"] for d in expected]
    for a, b in zip(first, expected):
        assert torch.equal(a["image"], b["image"])
        assert torch.equal(a["instances"].gt_boxes.tensor, b["instances"].gt_boxes.tensor)
    resumed.train()
    # The same weights as the uninterrupted run (same data, augmentation and sampling).
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    # And not trivially so: training changed them.
    assert not torch.allclose(
        short.model.state_dict()["proposal_generator.head.conv.weight"],
        full.model.state_dict()["proposal_generator.head.conv.weight"],
    )


def test_resume_without_checkpoint_starts_fresh(tiny_shapes, tmp_path, caplog):
    cfg = quickstart_cfg(tiny_shapes, tmp_path / "empty", 1)
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 0
