"""Mixed precision in training (SOLVER.AMP.ENABLED), tested on the CPU (bfloat16 autocast):
the forward really runs in bfloat16, its losses are within bfloat16's tolerance of float32's,
training converges, and DefaultTrainer wires the key through."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

from detkit.config import get_cfg
from detkit.engine import DefaultTrainer
from detkit.engine.train_loop import SimpleTrainer, amp_dtype, build_grad_scaler
from detkit.modeling import build_model
from detkit.structures import pairwise_iou
from detkit.utils.synthetic import two_shapes_example

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _model():
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs/quickstart/faster_rcnn_tiny.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    return build_model(cfg)


def _train(amp: bool, steps: int, lr: float = 0.0):
    """``steps`` SimpleTrainer iterations on one image; the model, its loss history and the
    dtype the backbone's output had in the last forward."""
    model = _model()
    seen = {}
    model.backbone.register_forward_hook(
        lambda m, args, out: seen.__setitem__("dtype", next(iter(out.values())).dtype)
    )
    batch = [two_shapes_example()]
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loop = SimpleTrainer(model, iter(lambda: batch, None), optimizer, amp=amp)
    torch.manual_seed(1)  # the samplers' draws: the same in both runs
    loop.train(0, steps)
    history = {
        k: [v for _, v in loop.storage.history(k)]
        for k in ("loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc", "total_loss")
    }
    return model, history, seen["dtype"]


def test_autocast_type_and_scaler_per_device():
    assert amp_dtype("cpu") is torch.bfloat16 and amp_dtype("cuda") is torch.float16
    assert build_grad_scaler(True, "cpu") is None  # bfloat16 has float32's range
    assert build_grad_scaler(False, "cuda") is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # without CUDA the scaler disables itself
        assert isinstance(build_grad_scaler(True, "cuda"), torch.amp.GradScaler)


def test_amp_forward_is_bfloat16_and_losses_match_float32():
    # lr 0: one forward of the same weights on the same image with the same draws.
    _, exact, exact_dtype = _train(amp=False, steps=1)
    _, mixed, mixed_dtype = _train(amp=True, steps=1)
    assert (exact_dtype, mixed_dtype) == (torch.float32, torch.bfloat16)
    for name in exact:
        # bfloat16 keeps 8 bits of mantissa (relative step 2 ** -8 = 0.4%); through a
        # network the losses move by a few of those steps.
        assert mixed[name][0] == pytest.approx(exact[name][0], rel=0.06, abs=1e-3), name


def test_training_converges_with_amp():
    model, history, _ = _train(amp=True, steps=80, lr=0.02)
    total = history["total_loss"]
    assert total[-1] < 0.2 * total[0], (total[0], total[-1])
    # Inference stays float32 and finds both objects.
    example = two_shapes_example()
    model.eval()
    with torch.no_grad():
        (output,) = model([example])
    instances = output["instances"]
    assert instances.pred_boxes.tensor.dtype == torch.float32
    iou = pairwise_iou(example["instances"].gt_boxes, instances.pred_boxes)
    assert iou.max(dim=1).values.min() > 0.7


def test_default_trainer_reads_the_key(tiny_shapes, tmp_path):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs/quickstart/shapes.yaml"))
    cfg.merge_from_list(
        [
            "DATASETS.TRAIN", [tiny_shapes[0]],
            "DATASETS.TEST", [],
            "MODEL.DEVICE", "cpu",
            "MODEL.TINY.CHANNELS", [8, 16, 16, 32],
            "SOLVER.IMS_PER_BATCH", 2,
            "SOLVER.MAX_ITER", 2,
            "SOLVER.AMP.ENABLED", True,
            "DATALOADER.NUM_WORKERS", 0,
            "OUTPUT_DIR", str(tmp_path),
        ]
    )  # fmt: skip
    trainer = DefaultTrainer(cfg)
    assert trainer.grad_scaler is None  # CPU: bfloat16, no scaler
    trainer.train()
    assert trainer.loop.amp and trainer.loop.device_type == "cpu"
    assert trainer.loop.finished
