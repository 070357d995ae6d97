"""Tests of detkit.structures.instances: equal-length fields, indexing, cat."""

from __future__ import annotations

import pytest
import torch

from detkit.structures import Boxes, Instances


def three_objects() -> Instances:
    inst = Instances((20, 30))
    inst.gt_boxes = Boxes(torch.tensor([[0.0, 0, 5, 5], [1, 1, 6, 6], [2, 2, 7, 7]]))
    inst.gt_classes = torch.tensor([4, 5, 6])
    inst.scores = torch.tensor([0.9, 0.5, 0.1])
    return inst


def assert_objects(inst: Instances, rows: list[int]) -> None:
    """``inst`` holds objects ``rows`` of three_objects(), in that order, in every field."""
    full = three_objects()
    assert len(inst) == len(rows)
    assert inst.gt_boxes.tensor.tolist() == [full.gt_boxes.tensor[r].tolist() for r in rows]
    assert inst.gt_classes.tolist() == [4 + r for r in rows]
    assert inst.scores.tolist() == [full.scores[r].item() for r in rows]
    assert inst.image_size == (20, 30)


def test_fields_set_get_has_remove():
    inst = three_objects()
    assert len(inst) == 3
    assert inst.image_size == (20, 30)
    assert inst.has("scores") and not inst.has("pred_boxes")
    assert inst.get("gt_classes").tolist() == [4, 5, 6]
    assert inst.gt_classes is inst.get("gt_classes")
    assert list(inst.get_fields()) == ["gt_boxes", "gt_classes", "scores"]
    inst.remove("scores")
    assert not inst.has("scores")
    assert list(inst.get_fields()) == ["gt_boxes", "gt_classes"]
    with pytest.raises(AttributeError, match="no field 'scores'"):
        _ = inst.scores
    inst.set("scores", torch.ones(3))  # set() is the same as attribute assignment
    assert inst.scores.tolist() == [1.0, 1.0, 1.0]


def test_fields_from_the_constructor():
    inst = Instances((4, 5), scores=torch.zeros(2), labels=[1, 2])
    assert len(inst) == 2 and inst.labels == [1, 2]
    assert len(Instances((4, 5))) == 0  # no fields yet


def test_length_mismatch_is_an_error_naming_the_field_and_both_lengths():
    inst = three_objects()
    with pytest.raises(ValueError) as excinfo:
        inst.pred_classes = torch.tensor([1, 2])
    msg = str(excinfo.value)
    assert "'pred_classes'" in msg
    assert "length 2" in msg and "length 3" in msg
    assert not inst.has("pred_classes")  # nothing was set
    with pytest.raises(ValueError, match="'extra' has length 5"):
        Instances((1, 1), a=torch.zeros(2), extra=torch.zeros(5))


@pytest.mark.parametrize(
    ("index", "rows"),
    [
        (1, [1]),
        (-1, [2]),
        (slice(0, 2), [0, 1]),
        (slice(1, None), [1, 2]),
        (torch.tensor([True, False, True]), [0, 2]),
        (torch.tensor([False, False, False]), []),
        (torch.tensor([2, 0]), [2, 0]),
    ],
)
def test_indexing_applies_to_every_field(index, rows):
    assert_objects(three_objects()[index], rows)


def test_int_index_out_of_range():
    with pytest.raises(IndexError, match="index 3 out of range for length 3"):
        three_objects()[3]


def test_cat_concatenates_every_field():
    a = three_objects()
    b = three_objects()[torch.tensor([2, 1])]
    cat = Instances.cat([a, b])
    assert_objects(cat, [0, 1, 2, 2, 1])
    assert type(cat.gt_boxes) is Boxes


def test_cat_concatenates_list_fields():
    a = Instances((2, 2), names=["a"], scores=torch.tensor([1.0]))
    b = Instances((2, 2), names=["b", "c"], scores=torch.tensor([2.0, 3.0]))
    cat = Instances.cat([a, b])
    assert cat.names == ["a", "b", "c"]
    assert cat.scores.tolist() == [1.0, 2.0, 3.0]


def test_cat_with_mismatched_image_sizes_is_an_error():
    a = Instances((20, 30), scores=torch.zeros(1))
    b = Instances((20, 31), scores=torch.zeros(1))
    with pytest.raises(ValueError) as excinfo:
        Instances.cat([a, b])
    msg = str(excinfo.value)
    assert "(20, 30)" in msg and "(20, 31)" in msg


def test_cat_with_different_fields_is_an_error():
    a = Instances((2, 2), scores=torch.zeros(1))
    b = Instances((2, 2), labels=torch.zeros(1))
    with pytest.raises(ValueError, match="fields differ"):
        Instances.cat([a, b])
