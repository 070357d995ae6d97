"""Selective Search proposals: OpenCV's boxes as detkit proposals files, resumable."""

from __future__ import annotations

import importlib.util
import os
import types
from importlib import metadata

import cv2
import numpy as np
import pytest

from detkit.data import DatasetCatalog, load_proposals, read_image, save_proposals
from detkit.data.selective_search import (
    compute_selective_search_proposals,
    partial_proposals_path,
    rects_to_boxes,
    remove_duplicate_boxes,
    selective_search,
)
from detkit.data.selective_search import search as ss_module
from detkit.evaluation import box_iou_numpy

# Flat rectangles (x1, y1, x2, y2; continuous pixels) on a plain grey background, far apart.
RECTANGLES = [(16, 24, 64, 72), (96, 16, 184, 56), (56, 96, 144, 144)]
COLOURS = [(0, 0, 255), (255, 0, 0), (0, 200, 0)]


def flat_rectangles_image(height: int = 160, width: int = 200) -> np.ndarray:
    image = np.full((height, width, 3), 160, np.uint8)
    for (x1, y1, x2, y2), colour in zip(RECTANGLES, COLOURS):
        image[y1:y2, x1:x2] = colour
    return image


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    return box_iou_numpy(np.asarray(box, np.float64)[None], boxes, False)[0]


def write_images(folder, sizes: list[tuple[int, int]]) -> list[dict]:
    """One JPEG of flat rectangles per (height, width); dicts with ids "img0", "img1", ..."""
    dicts = []
    for i, (height, width) in enumerate(sizes):
        path = os.path.join(str(folder), f"img{i}.jpg")
        image = flat_rectangles_image(160, 200)
        cv2.imwrite(path, cv2.resize(image, (width, height), interpolation=cv2.INTER_NEAREST))
        dicts.append({"file_name": path, "image_id": f"img{i}", "height": height, "width": width})
    return dicts


@pytest.fixture
def fake_opencv(monkeypatch):
    """Replace OpenCV's search by planted rects; records the image shapes it was given."""
    calls: list[tuple[int, ...]] = []

    def install(rects: list[list[int]]) -> list[tuple[int, ...]]:
        def fake(image_bgr, mode, seed):
            calls.append(image_bgr.shape)
            return np.asarray(rects, dtype=np.int64).reshape(-1, 4)

        monkeypatch.setattr(ss_module, "_opencv_selective_search", fake)
        return calls

    return install


# --- one image ---------------------------------------------------------------------------


def test_each_flat_rectangle_is_a_proposal():
    # SS starts from segments of uniform colour and merges upwards, so each flat rectangle
    # is a region of the hierarchy and its bounding box a proposal.
    boxes = selective_search(flat_rectangles_image(), mode="fast")
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    for rect in RECTANGLES:
        assert iou(np.asarray(rect, np.float32), boxes).max() > 0.9, rect


def test_same_seed_same_ranking():
    image = flat_rectangles_image()
    np.testing.assert_array_equal(selective_search(image, seed=3), selective_search(image, seed=3))


def test_rects_to_boxes_hand_computed():
    # (x, y, w, h) -> (x, y, x + w, y + h): pixel columns 3..3 make a box 3..4.
    np.testing.assert_array_equal(
        rects_to_boxes(np.array([[0, 0, 10, 5], [3, 4, 1, 1], [7, 2, 5, 9]])),
        np.array([[0, 0, 10, 5], [3, 4, 4, 5], [7, 2, 12, 11]], np.float32),
    )


def test_remove_duplicate_boxes_keeps_first_occurrences_in_order():
    boxes = np.array([[5, 5, 9, 9], [0, 0, 4, 4], [5, 5, 9, 9], [1, 1, 2, 2], [0, 0, 4, 4]])
    np.testing.assert_array_equal(remove_duplicate_boxes(boxes), [0, 1, 3])


def test_order_kept_duplicates_small_boxes_and_overflow_removed(fake_opencv):
    fake_opencv(
        [
            [10, 10, 20, 20],
            [0, 0, 1, 30],
            [10, 10, 20, 20],
            [0, 0, 50, 40],
            [5, 5, 2, 2],
            [3, 3, 10, 10],
        ]
    )
    boxes = selective_search(np.zeros((40, 50, 3), np.uint8), min_size=2, max_proposals=3)
    # [0, 0, 1, 30] is 1 px wide (< 2), the repeat of the first box goes, and 3 remain.
    np.testing.assert_array_equal(
        boxes, np.array([[10, 10, 30, 30], [0, 0, 50, 40], [5, 5, 7, 7]], np.float32)
    )


def test_resize_to_scales_boxes_back_by_the_inverse_factor(fake_opencv):
    # 375x500 with shorter side 200: factor 200/375, searched image 200x267 (500 * 8/15 =
    # 266.67 -> 267), boxes scaled back by 375/200 = 1.875 (500/267 = 1.8727 in x).
    calls = fake_opencv([[10, 20, 30, 40], [0, 0, 267, 200], [100, 50, 2, 2]])
    boxes = selective_search(np.zeros((375, 500, 3), np.uint8), resize_to=200, min_size=0)
    assert calls == [(200, 267, 3)]
    expected = np.array([[10, 20, 40, 60], [0, 0, 267, 200], [100, 50, 102, 52]]) * 1.875
    assert np.abs(boxes - expected).max() <= 1.0
    np.testing.assert_allclose(boxes[1], [0, 0, 500, 375], atol=1e-3)  # the whole image
    np.testing.assert_allclose(boxes[0], [10 * 500 / 267, 37.5, 40 * 500 / 267, 112.5], rtol=1e-6)


def test_min_size_is_applied_in_original_pixels(fake_opencv):
    # 1.5 px in the searched image (shorter side 100 of 200) is 3 px in the original.
    fake_opencv([[0, 0, 1, 1], [10, 10, 2, 2]])
    boxes = selective_search(np.zeros((200, 200, 3), np.uint8), resize_to=100, min_size=3)
    np.testing.assert_array_equal(boxes, np.array([[20, 20, 24, 24]], np.float32))


def test_resize_to_on_a_twice_upscaled_image_gives_twice_the_boxes():
    # Downscaling a 2x nearest-upscaled image by 2 (area interpolation) gives the original
    # pixels back, so SS sees the same image and every box comes back multiplied by 2.
    image = flat_rectangles_image()
    upscaled = cv2.resize(image, (400, 320), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(
        selective_search(upscaled, resize_to=160), selective_search(image) * 2
    )


def test_bad_arguments_are_explained():
    image = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(ValueError, match="mode must be one of fast, quality, single"):
        selective_search(image, mode="slow")
    with pytest.raises(ValueError, match="max_proposals must be at least 1"):
        selective_search(image, max_proposals=0)
    with pytest.raises(ValueError, match="uint8 \\[H, W, 3\\]"):
        selective_search(np.zeros((20, 20), np.uint8))


# --- the missing extra ---------------------------------------------------------------------


@pytest.mark.parametrize("ximgproc", ["absent", "stubs only"])
def test_missing_contrib_says_what_to_install(monkeypatch, tmp_path, ximgproc):
    if ximgproc == "absent":
        monkeypatch.delattr(cv2, "ximgproc", raising=False)
    else:  # what a leftover cv2/ximgproc/ folder of .pyi stubs looks like after import
        monkeypatch.setattr(cv2, "ximgproc", types.ModuleType("cv2.ximgproc"), raising=False)
    version = metadata.version("opencv-python-headless")
    with pytest.raises(ImportError) as info:
        selective_search(np.zeros((20, 20, 3), np.uint8))
    message = str(info.value)
    assert 'pip install -e ".[selective-search]"' in message
    assert f"opencv-contrib-python-headless=={version}" in message
    assert "same cv2 package" in message
    assert (
        f'pip install --force-reinstall --no-deps "opencv-contrib-python-headless=={version}"'
        in message
    )
    # The whole-dataset function fails before reading any image.
    missing = {"file_name": str(tmp_path / "absent.jpg"), "image_id": 1}
    with pytest.raises(ImportError, match="selective-search"):
        compute_selective_search_proposals([missing], str(tmp_path / "p.npz"), progress=False)


# --- a dataset, as a proposals file ----------------------------------------------------------


def test_proposals_file_of_three_images(tmp_path):
    dicts = write_images(tmp_path, [(160, 200), (120, 120), (90, 150)])
    output = str(tmp_path / "out" / "ss.npz")
    run = compute_selective_search_proposals(
        dicts, output, max_proposals=40, num_workers=0, progress=False
    )
    proposals = load_proposals(output)
    assert proposals.image_ids == ["img0", "img1", "img2"]
    assert proposals.source == f"selective search (fast, OpenCV {cv2.__version__})"
    assert run.num_images == 3 and run.num_proposals == int(proposals.counts.sum())
    assert not os.path.exists(partial_proposals_path(output))
    for record in dicts:
        boxes, logits = proposals.get(record["image_id"])
        assert 0 < len(boxes) <= 40
        assert (np.diff(logits) < 0).all()
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] > boxes[:, :2]).all()
        assert (boxes[:, 2] <= record["width"]).all() and (boxes[:, 3] <= record["height"]).all()
        # The file keeps SS's own order: the same boxes as one call, in the same order.
        expected = selective_search(read_image(record["file_name"]), max_proposals=40)
        np.testing.assert_array_equal(boxes, expected)


def test_worker_processes_give_the_same_file(tmp_path):
    # Each image's ranking is seeded, so which process searched it does not matter.
    dicts = write_images(tmp_path, [(160, 200), (120, 120), (90, 150)])
    in_process, pooled = str(tmp_path / "a.npz"), str(tmp_path / "b.npz")
    compute_selective_search_proposals(dicts, in_process, num_workers=0, progress=False)
    compute_selective_search_proposals(dicts, pooled, num_workers=2, chunksize=1, progress=False)
    a, b = load_proposals(in_process), load_proposals(pooled)
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.boxes, b.boxes)


def test_unreadable_image_keeps_partial_results_and_the_next_run_resumes(
    tmp_path, fake_opencv, monkeypatch
):
    dicts = write_images(tmp_path, [(60, 80), (60, 80), (60, 80)])
    with open(dicts[1]["file_name"], "wb") as f:
        f.write(b"not a jpeg")
    calls = fake_opencv([[1, 2, 3, 4], [0, 0, 10, 10]])
    output = str(tmp_path / "ss.npz")
    with pytest.raises(ValueError, match=r"img1\.jpg \(image_id 'img1'\)"):
        compute_selective_search_proposals(
            dicts, output, num_workers=0, checkpoint_every=10, progress=False
        )
    partial_path = partial_proposals_path(output)
    partial = load_proposals(partial_path)
    assert partial.image_ids == ["img0"] and not os.path.exists(output)

    # Plant a recognisable result for img0 in the partial file, repair img1, run again.
    planted = np.array([[7, 7, 9, 9]], np.float32)
    save_proposals(partial_path, ["img0"], [planted], [np.zeros(1)], source=partial.source)
    cv2.imwrite(dicts[1]["file_name"], np.zeros((60, 80, 3), np.uint8))
    calls.clear()
    run = compute_selective_search_proposals(dicts, output, num_workers=0, progress=False)
    assert len(calls) == 2 and run.num_resumed == 1  # img1 and img2 only
    proposals = load_proposals(output)
    np.testing.assert_array_equal(proposals.get("img0")[0], planted)
    np.testing.assert_array_equal(proposals.get("img2")[0], [[1, 2, 4, 6], [0, 0, 10, 10]])
    assert not os.path.exists(partial_path)


def test_partial_file_is_written_every_checkpoint_every_images(tmp_path, monkeypatch):
    dicts = write_images(tmp_path, [(60, 80)] * 5)
    output = str(tmp_path / "ss.npz")
    partial_path = partial_proposals_path(output)
    seen: list[list[str]] = []  # the partial file's images when each image is searched

    def fake(image_bgr, mode, seed):
        seen.append(load_proposals(partial_path).image_ids if os.path.exists(partial_path) else [])
        return np.array([[0, 0, 10, 10]])

    monkeypatch.setattr(ss_module, "_opencv_selective_search", fake)
    compute_selective_search_proposals(
        dicts, output, num_workers=0, checkpoint_every=2, progress=False
    )
    assert seen == [[], [], ["img0", "img1"], ["img0", "img1"], ["img0", "img1", "img2", "img3"]]


def test_partial_file_of_other_settings_is_refused(tmp_path, fake_opencv):
    dicts = write_images(tmp_path, [(60, 80)])
    fake_opencv([[0, 0, 10, 10]])
    output = str(tmp_path / "ss.npz")
    save_proposals(
        partial_proposals_path(output),
        ["img0"],
        [np.zeros((1, 4))],
        [np.zeros(1)],
        source="RPN (output/rpn)",
    )
    with pytest.raises(ValueError, match="other settings.*delete the file to start over"):
        compute_selective_search_proposals(dicts, output, num_workers=0, progress=False)


def test_repeated_image_ids_are_refused(tmp_path, fake_opencv):
    dicts = write_images(tmp_path, [(60, 80)]) * 2
    fake_opencv([[0, 0, 10, 10]])
    with pytest.raises(ValueError, match="image_id 'img0' appears twice"):
        compute_selective_search_proposals(dicts, str(tmp_path / "ss.npz"), progress=False)


# --- tools/selective_search.py ----------------------------------------------------------------


def load_tool():
    path = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "selective_search.py")
    spec = importlib.util.spec_from_file_location("selective_search_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_writes_one_file_per_dataset(tmp_path, fake_opencv, dataset_name, capsys):
    dicts = write_images(tmp_path, [(60, 80), (50, 50)])
    name = dataset_name()
    DatasetCatalog.register(name, lambda: dicts)
    fake_opencv([[0, 0, 10, 10], [5, 5, 20, 20]])
    tool = load_tool()
    status = tool.main(
        [
            "--dataset",
            name,
            "--output-dir",
            str(tmp_path / "out"),
            "--num-workers",
            "0",
            "--no-progress",
        ]
    )
    assert status == 0
    assert load_proposals(str(tmp_path / "out" / f"{name}.npz")).image_ids == ["img0", "img1"]
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "2 images" in last_line and "time" in last_line and "s/image" in last_line


def test_tool_user_errors_are_one_line_and_exit_2(tmp_path, capsys):
    tool = load_tool()
    status = tool.main(["--dataset", "no_such_dataset", "--output-dir", str(tmp_path)])
    error = capsys.readouterr().err
    assert status == 2 and "No dataset named 'no_such_dataset'" in error
    assert "shapes_train" in error and "Traceback" not in error
    with pytest.raises(SystemExit) as info:
        tool.main(["--dataset", "a", "--dataset", "b", "--output", str(tmp_path / "x.npz")])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        tool.main(["--dataset", "a", "--output-dir", str(tmp_path), "--max-proposals", "0"])
    assert info.value.code == 2
