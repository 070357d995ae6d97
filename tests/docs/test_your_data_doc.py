"""docs/your_data_your_code.md runs as written: in a temporary folder laid out like the
checkout's root (``configs/`` linked in), its file blocks (```python file=PATH, ```yaml
file=PATH) are saved and its ```python blocks executed in order in one namespace. The
datasets, the custom augmentation, the custom head, the training, the fine-tuning and the
predictor are then checked against what the page's own generator made."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from doc_pages import doc_blocks, run_page  # tests/docs/doc_pages.py

from detkit.data import DatasetCatalog, MetadataCatalog
from detkit.structures import Boxes, pairwise_iou

DOC = Path(__file__).resolve().parents[2] / "docs" / "your_data_your_code.md"
DATASETS = ("shapes2_train", "shapes2_val", "shapes3_train", "shapes3_val")


def check_datasets(made: dict) -> None:
    """Each registered dataset holds the generator's images and boxes, in XYXY pixels."""
    assert set(made) == set(DATASETS)
    for name, split in made.items():
        dicts = DatasetCatalog.get(name)
        classes = MetadataCatalog.get(name).thing_classes
        assert len(dicts) == len(split), name
        expected = sorted(
            (file_name, object_class, tuple(box))
            for file_name, objects in split
            for object_class, box in objects
        )
        loaded = sorted(
            (Path(d["file_name"]).name, classes[a["category_id"]], tuple(int(v) for v in a["bbox"]))
            for d in dicts
            for a in d["annotations"]
        )
        assert loaded == expected, name
        assert all(
            float(v).is_integer() for d in dicts for a in d["annotations"] for v in a["bbox"]
        )
    assert MetadataCatalog.get("shapes2_train").thing_classes == ["rectangle", "disc"]
    assert MetadataCatalog.get("shapes3_train").thing_classes == ["rectangle", "disc", "triangle"]


def check_training(ns: dict) -> None:
    cfg, trainer, gray = ns["cfg"], ns["trainer"], ns["gray"]
    # The config's head and the custom augmentation were used: once per image loaded, gray
    # about half of the time (600 fair draws: outside [240, 360] has odds below 1e-6).
    assert type(trainer.model.roi_heads.box_head).__name__ == "ConvOneFCHead"
    assert gray.num_images == cfg.SOLVER.MAX_ITER * cfg.SOLVER.IMS_PER_BATCH
    assert 240 <= gray.num_gray <= 360
    losses = ns["losses"]
    assert len(losses) == cfg.SOLVER.MAX_ITER and all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first, losses
    # The evaluation after training and Trainer.test with an explicit evaluator agree.
    assert set(ns["results"]["bbox"]) >= {"AP", "AP50", "AP75"}
    assert ns["test_results"]["bbox"]["AP50"] == pytest.approx(ns["results"]["bbox"]["AP50"])
    assert (Path(cfg.OUTPUT_DIR) / "model_final.pth").is_file()


def check_fine_tuning(ns: dict, log) -> None:
    messages = [r.getMessage() for r in log.records if "Skipped" in r.getMessage()]
    assert len(messages) == 1, messages
    message = messages[0]
    # K + 1 class scores and 4 (K + 1) box deltas: 2 classes in the checkpoint, 3 in the model.
    for line in (
        "roi_heads.box_predictor.cls_score.weight: (3, 128) in the checkpoint, (4, 128)",
        "roi_heads.box_predictor.cls_score.bias: (3,) in the checkpoint, (4,) in the model",
        "roi_heads.box_predictor.bbox_pred.weight: (12, 128) in the checkpoint, (16, 128)",
        "roi_heads.box_predictor.bbox_pred.bias: (12,) in the checkpoint, (16,) in the model",
    ):
        assert line in message, message
    assert "Skipped 4 checkpoint tensors" in message
    model = ns["ft_trainer"].model
    assert model.roi_heads.box_predictor.cls_score.out_features == 4
    assert "bbox" in ns["ft_results"]


def check_prediction(ns: dict) -> None:
    image, instances = ns["image_bgr"], ns["outputs"]["instances"]
    assert instances.image_size == image.shape[:2]
    assert set(instances.get_fields()) == {"pred_boxes", "scores", "pred_classes"}
    boxes = instances.pred_boxes.tensor
    assert boxes.shape == (len(instances), 4)
    height, width = image.shape[:2]
    assert bool((boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= width).all())
    assert bool((boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= height).all())
    assert bool(((instances.pred_classes >= 0) & (instances.pred_classes < 3)).all())
    assert bool((instances.scores[:-1] >= instances.scores[1:]).all())
    # The fine-tuned model found an object of the image: its best detection is on one.
    _, objects = ns["made"]["shapes3_val"][0]
    truth = Boxes(torch.tensor([box for _, box in objects], dtype=torch.float32))
    assert len(instances) and float(instances.scores[0]) > 0.5
    assert float(pairwise_iou(instances.pred_boxes[:1], truth).max()) > 0.5
    picture = ns["picture"]
    assert picture.shape == (3 * height, 3 * width, 3)
    assert Path("output/my_project_3_classes/prediction.png").is_file()


def test_your_data_page_runs(example_folder, one_thread, log):
    ns = run_page(DOC, example_folder)
    assert {"my_project/datasets.py", "my_project/modeling.py", "my_project/config.yaml"} <= {
        path for path, _ in doc_blocks(DOC) if path
    }
    check_datasets(ns["made"])
    check_training(ns)
    check_fine_tuning(ns, log)
    check_prediction(ns)
