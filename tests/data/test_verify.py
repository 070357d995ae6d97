"""Dataset verification: a corpus of bad inputs generated here, each with what "stop", "skip"
and "off" must do; the cache (a second run decodes nothing, a changed file is decoded again);
DATASETS.VERIFY in the loaders and before training; tools/verify_dataset.py as a user runs it."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from detkit.config import get_cfg
from detkit.data import (
    DatasetCatalog,
    DatasetVerificationError,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
    register_coco_instances,
    register_pascal_voc,
    verify_dataset_dicts,
    verify_datasets,
)
from detkit.data import verify as verify_module

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLASSES = ("cat", "dog")
GOOD = ("cat", 2, 2, 10, 10, 0)  # one sound object, 1-based VOC coordinates


def _encoded(ext: str) -> bytes:
    """A 20 x 40 noise image encoded as ``ext`` (noise: nothing compresses it to nothing)."""
    noise = np.random.default_rng(0).integers(0, 255, (20, 40, 3), dtype=np.uint8)
    return cv2.imencode(ext, noise)[1].tobytes()


JPEG, PNG = _encoded(".jpg"), _encoded(".png")


# --------------------------------------------------------------------------------------------
# The corpus: each case registers a dataset with an image "good" and an image "bad".
# --------------------------------------------------------------------------------------------


@dataclass
class Case:
    """``outcome``: "verify" (the check finds it: stop raises, skip drops "bad", off keeps
    it), "loader_warning" (the loader drops the bad box with a warning, in every mode) or
    "loader_error" (the loader cannot read the dataset, in every mode)."""

    make: Callable  # (root, name, write_voc) -> None: writes the files, registers name
    outcome: str
    fragments: tuple[str, ...]  # in the error (stop / loader_error) or the warning


def _voc(objects_of_bad=(GOOD,), size_of_bad=(20, 40), edit=None):
    """A VOC tree (images 20 x 40; the XML of "bad" says ``size_of_bad``), then damaged by
    ``edit(root)``."""

    def make(root, name, write_voc):
        write_voc(root, "train", {"good": (20, 40, [GOOD]), "bad": (*size_of_bad, objects_of_bad)})
        if edit is not None:
            edit(root)
        register_pascal_voc(name, root, "train", 2007, CLASSES)

    return make


def _write(relative: str, data: bytes):
    def edit(root):
        with open(os.path.join(root, relative), "wb") as f:
            f.write(data)

    return edit


def _dicts(bad_file: bytes = b"", bad_ann: dict | None = None, suffix: str = ".jpg"):
    """A dataset registered from dicts (not VOC), as a user's own loader would give them."""

    def make(root, name, write_voc):
        os.makedirs(root)
        good = os.path.join(root, "good.jpg")
        bad = os.path.join(root, f"bad{suffix}")
        with open(good, "wb") as f:
            f.write(JPEG)
        with open(bad, "wb") as f:
            f.write(bad_file or JPEG)
        ann = {"bbox": [1.0, 1.0, 9.0, 9.0], "category_id": 0}
        dicts = [
            {
                "file_name": good,
                "height": 20,
                "width": 40,
                "image_id": "good",
                "annotations": [ann],
            },
            {
                "file_name": bad,
                "height": 20,
                "width": 40,
                "image_id": "bad",
                "annotations": [ann, {**ann, **(bad_ann or {})}],
            },
        ]
        DatasetCatalog.register(name, lambda: [dict(d) for d in dicts])
        MetadataCatalog.get(name).set(thing_classes=list(CLASSES))

    return make


def _coco(bbox=(1, 1, 8, 8), write_bad_image=True, text: str | None = None):
    def make(root, name, write_voc):
        os.makedirs(os.path.join(root, "images"))
        for file in ("good.jpg", "bad.jpg") if write_bad_image else ("good.jpg",):
            with open(os.path.join(root, "images", file), "wb") as f:
                f.write(JPEG)
        content = {
            "images": [
                {"id": 1, "file_name": "good.jpg", "height": 20, "width": 40},
                {"id": 2, "file_name": "bad.jpg", "height": 20, "width": 40},
            ],
            "categories": [{"id": 1, "name": "cat"}],
            "annotations": [
                {"id": 10, "image_id": 1, "category_id": 1, "bbox": [1, 1, 8, 8]},
                {"id": 11, "image_id": 2, "category_id": 1, "bbox": [1, 1, 8, 8]},
                {"id": 12, "image_id": 2, "category_id": 1, "bbox": list(bbox)},
            ],
        }
        json_file = os.path.join(root, "instances.json")
        with open(json_file, "w") as f:
            f.write(text if text is not None else json.dumps(content))
        register_coco_instances(name, json_file, os.path.join(root, "images"))

    return make


CASES = {
    "missing image": Case(
        _voc(edit=lambda root: os.remove(os.path.join(root, "JPEGImages", "bad.jpg"))),
        "verify",
        ("bad.jpg (image_id 'bad') is missing",),
    ),
    "zero-byte file": Case(
        _voc(edit=_write("JPEGImages/bad.jpg", b"")),
        "verify",
        ("bad.jpg", "is empty (0 bytes)"),
    ),
    "text file": Case(
        _voc(edit=_write("JPEGImages/bad.jpg", b"<html>404 Not Found</html>\n")),
        "verify",
        ("bad.jpg", "not an image OpenCV can decode", "<html>"),
    ),
    "truncated JPEG": Case(
        _voc(edit=_write("JPEGImages/bad.jpg", JPEG[: len(JPEG) * 2 // 3])),
        "verify",
        ("bad.jpg", "truncated", "end-of-image marker (FF D9)"),
    ),
    "truncated PNG": Case(
        _dicts(bad_file=PNG[: len(PNG) // 2], suffix=".png"),
        "verify",
        ("bad.png", "truncated", "PNG chunk 'IDAT'"),
    ),
    "size differs from the XML": Case(
        _voc(edit=_write("JPEGImages/bad.jpg", JPEG), size_of_bad=(30, 40)),
        "verify",
        ("bad.jpg", "is 20x40 pixels", "annotation says 30x40"),
    ),
    "box 1e30 in dicts": Case(
        _dicts(bad_ann={"bbox": [0.0, 0.0, 1e30, 1e30]}),
        "verify",
        ("object 1 whose box lies more than the image size outside", "(width 40, height 20)"),
    ),
    "NaN box in dicts": Case(
        _dicts(bad_ann={"bbox": [float("nan"), 0.0, 5.0, 5.0]}),
        "verify",
        ("object 1 whose box is not finite",),
    ),
    "negative-size box in dicts": Case(
        _dicts(bad_ann={"bbox": [10.0, 2.0, 5.0, 8.0]}),
        "verify",
        ("object 1 whose box has a negative width or height",),
    ),
    "category id out of range": Case(
        _dicts(bad_ann={"category_id": 2}),
        "verify",
        ("object 1 with category_id 2; the dataset has 2 classes",),
    ),
    "COCO image file missing": Case(
        _coco(write_bad_image=False),
        "verify",
        ("bad.jpg (image_id 2) is missing",),
    ),
    "VOC box 1e30": Case(
        _voc(objects_of_bad=(GOOD, ("dog", 1, 1, 1e30, 1e30, 0))),
        "loader_warning",
        ("bad.xml: object 1 ('dog')", "farther outside the 40x20 image", "not clipped"),
    ),
    "VOC NaN box": Case(
        _voc(objects_of_bad=(GOOD, ("dog", "nan", 1, 5, 5, 0))),
        "loader_warning",
        ("bad.xml: object 1 ('dog')", "non-finite box"),
    ),
    "VOC negative-size box": Case(
        _voc(objects_of_bad=(GOOD, ("dog", 10, 2, 5, 8, 0))),
        "loader_warning",
        ("bad.xml: object 1 ('dog')", "empty box after clipping"),
    ),
    "COCO box 1e30": Case(
        _coco(bbox=(0, 0, 1e30, 1e30)),
        "loader_warning",
        ("instances.json: dropped 1 annotations whose box lies farther outside", "[12]"),
    ),
    "VOC class name unknown": Case(
        _voc(objects_of_bad=(GOOD, ("horse", 1, 1, 5, 5, 0))),
        "loader_error",
        ("bad.xml: object 1 has class 'horse'", "cat, dog"),
    ),
    "malformed XML": Case(
        _voc(edit=_write("Annotations/bad.xml", b"<annotation>\n<size><width>40</size>")),
        "loader_error",
        ("bad.xml is not valid XML (mismatched tag: line 2, column", "'bad'"),
    ),
    "malformed COCO json": Case(
        _coco(text='{"images": [\n  {"id": 1,, "file_name": "a.jpg"}]}'),
        "loader_error",
        ("instances.json is not valid JSON", "(line 2, column 12"),  # the 2nd comma
    ),
}


@pytest.mark.parametrize("mode", ["stop", "skip", "off"])
@pytest.mark.parametrize("case_name", list(CASES))
def test_bad_input_corpus(case_name, mode, tmp_path, dataset_name, write_voc, log):
    case = CASES[case_name]
    name = dataset_name()
    case.make(str(tmp_path / "data"), name, write_voc)

    def load():
        return get_detection_dataset_dicts([name], filter_empty=False, verify=mode)

    warnings = lambda: "\n".join(  # noqa: E731
        r.getMessage() for r in log.records if r.levelno == logging.WARNING
    )
    if case.outcome == "loader_error":
        with pytest.raises(ValueError) as error:
            load()
        assert not isinstance(error.value, DatasetVerificationError)
        for fragment in case.fragments:
            assert fragment in str(error.value)
    elif case.outcome == "loader_warning":
        dicts = load()
        assert [len(d["annotations"]) for d in dicts] == [1, 1]  # bad box dropped, image kept
        for fragment in case.fragments:
            assert fragment in warnings()
    elif mode == "stop":
        with pytest.raises(DatasetVerificationError) as error:
            load()
        message = str(error.value)
        for fragment in (*case.fragments, name, "DATASETS.VERIFY", "What to do"):
            assert fragment in message
        assert "good" not in message.replace(str(tmp_path), "")  # only the bad image is named
    elif mode == "skip":
        ids = [str(d["image_id"]) for d in load()]
        assert ids in (["good"], ["1"])
        for fragment in (*case.fragments, "left out these 1 image(s); 1 remain"):
            assert fragment in warnings()
    else:
        assert len(load()) == 2 and not warnings()


# --------------------------------------------------------------------------------------------
# The report and the cache
# --------------------------------------------------------------------------------------------


def _image_dicts(directory, count: int) -> list[dict]:
    os.makedirs(directory, exist_ok=True)
    dicts = []
    for i in range(count):
        path = os.path.join(directory, f"{i}.jpg")
        with open(path, "wb") as f:
            f.write(JPEG)
        dicts.append(
            {
                "file_name": path,
                "height": 20,
                "width": 40,
                "image_id": i,
                "annotations": [{"bbox": [1.0, 1.0, 5.0, 5.0], "category_id": 0}],
            }
        )
    return dicts


@pytest.fixture
def decode_calls(monkeypatch) -> list[str]:
    """Files the check decodes, in order of completion."""
    calls: list[str] = []
    real = verify_module.read_image

    def counting(path, *args, **kwargs):
        calls.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(verify_module, "read_image", counting)
    return calls


def test_second_run_decodes_nothing_and_changed_files_are_checked_again(tmp_path, decode_calls):
    dicts = _image_dicts(tmp_path / "images", 5)
    cache = str(tmp_path / "cache")
    first = verify_dataset_dicts(dicts, cache_dir=cache, num_workers=2)
    assert first.ok and first.num_decoded == 5 and len(decode_calls) == 5
    second = verify_dataset_dicts(dicts, cache_dir=cache)
    assert second.ok and (second.num_decoded, second.num_cached) == (0, 5)
    assert len(decode_calls) == 5
    # Same content, new mtime: checked again (only that file).
    stat = os.stat(dicts[1]["file_name"])
    os.utime(dicts[1]["file_name"], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    # New size (truncated in place, mtime kept): checked again, and now it is a problem.
    path = dicts[3]["file_name"]
    stat = os.stat(path)
    with open(path, "wb") as f:
        f.write(JPEG[:-100])
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    third = verify_dataset_dicts(dicts, cache_dir=cache)
    assert sorted(decode_calls[5:]) == sorted([dicts[1]["file_name"], path])
    assert [(p.image_id, p.kind) for p in third.problems] == [(3, "truncated")]
    # A cached problem is reported again without decoding.
    fourth = verify_dataset_dicts(dicts, cache_dir=cache)
    assert len(decode_calls) == 7 and [p.image_id for p in fourth.problems] == [3]
    # Without the cache everything is decoded, and nothing is written.
    verify_dataset_dicts(dicts, use_cache=False)
    assert len(decode_calls) == 12


def test_cache_location_follows_detkit_cache(tmp_path, monkeypatch, decode_calls):
    monkeypatch.setenv("DETKIT_CACHE", str(tmp_path / "mine"))
    assert verify_module.default_cache_dir() == str(tmp_path / "mine" / "verify")
    dicts = _image_dicts(tmp_path / "images", 2)
    verify_dataset_dicts(dicts)
    (cache_file,) = os.listdir(tmp_path / "mine" / "verify")
    content = json.load(open(tmp_path / "mine" / "verify" / cache_file))
    assert content["directory"] == str(tmp_path / "images")
    assert sorted(content["files"]) == ["0.jpg", "1.jpg"]
    verify_dataset_dicts(dicts)
    assert len(decode_calls) == 2


def test_unwritable_cache_warns_and_still_checks(tmp_path, log):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    report = verify_dataset_dicts(_image_dicts(tmp_path / "images", 1), cache_dir=str(blocker))
    assert report.ok and report.num_decoded == 1
    assert "Cannot write the image-check cache" in log.text


def test_report_lists_every_problem_with_kind_and_advice(tmp_path):
    dicts = _image_dicts(tmp_path / "images", 3)
    os.remove(dicts[0]["file_name"])
    dicts[2]["annotations"].append({"bbox": [0, 0, 1e30, 5], "category_id": 7})
    report = verify_dataset_dicts(dicts, dataset_name="mine", num_classes=2, use_cache=False)
    assert [(p.index, p.kind) for p in report.problems] == [
        (0, "missing"),
        (2, "bad_box"),
        (2, "bad_category"),
    ]
    assert report.bad_indices("mine") == {0, 2} and report.num_bad_images == 2
    text = report.format()
    assert text.startswith("Checked 3 images of mine") and "3 problem(s) in 2 image(s)" in text
    assert text.count("\n  mine: ") == 3
    assert "missing (1): Check the dataset's path" in text and "bad_category (1)" in text


# --------------------------------------------------------------------------------------------
# DATASETS.VERIFY in the loaders and before training
# --------------------------------------------------------------------------------------------


@pytest.fixture
def train_and_test(tmp_path, dataset_name, write_voc) -> tuple[str, str, str]:
    """(good train set of 3 images, test set whose image "t1" is truncated, its file)."""
    train, test = dataset_name(), dataset_name()
    objects = [GOOD]
    root = write_voc(
        str(tmp_path / "train"), "train", {f"a{i}": (20, 40, objects) for i in range(3)}
    )
    register_pascal_voc(train, root, "train", 2007, CLASSES)
    root = write_voc(
        str(tmp_path / "test"), "test", {"t0": (20, 40, objects), "t1": (20, 40, objects)}
    )
    bad = os.path.join(root, "JPEGImages", "t1.jpg")
    data = open(bad, "rb").read()
    with open(bad, "wb") as f:
        f.write(data[: len(data) // 2])
    register_pascal_voc(test, root, "test", 2007, CLASSES)
    return train, test, bad


def _cfg(train: str, test: str, mode: str | None):
    cfg = get_cfg()
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = [train], [test]
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TEST = [16], 16
    if mode is not None:
        cfg.DATASETS.VERIFY = mode
    return cfg


def test_default_is_stop_and_it_checks_the_test_set_before_training(train_and_test):
    train, test, bad = train_and_test
    cfg = _cfg(train, test, None)
    assert cfg.DATASETS.VERIFY == "stop"
    with pytest.raises(DatasetVerificationError) as error:
        verify_datasets(cfg)
    assert f"{test}: {bad} (image_id 't1') is truncated" in str(error.value)
    assert "Checked 5 images" in str(error.value)  # the train set was checked too
    # The test loader refuses the same set; the train loader is fine.
    with pytest.raises(DatasetVerificationError, match="DATASETS.VERIFY 'stop'"):
        build_detection_test_loader(cfg, test)
    assert len(build_detection_train_loader(cfg).dataset) == 3
    assert verify_datasets(cfg, [train]).ok


def test_skip_leaves_the_bad_image_out_and_off_keeps_it(train_and_test, log):
    train, test, _ = train_and_test
    skip = _cfg(train, test, "skip")
    report = verify_datasets(skip)  # warns, does not raise
    assert [p.image_id for p in report.problems] == ["t1"]
    assert "these 1 image(s) are left out" in log.text
    assert [b[0]["image_id"] for b in build_detection_test_loader(skip, test)] == ["t0"]
    off = _cfg(train, test, "off")
    assert verify_datasets(off).num_images == 0
    loader = build_detection_test_loader(off, test)
    assert len(loader.dataset) == 2  # not checked: the truncated file is read (and refused) late
    with pytest.raises(ValueError, match=r"t1\.jpg \(image_id 't1'\) is truncated"):
        list(loader)


def test_unknown_mode_names_the_key(train_and_test):
    with pytest.raises(ValueError, match=r"DATASETS.VERIFY must be one of .*'stop'.*got 'halt'"):
        verify_datasets(_cfg(*train_and_test[:2], "halt"))


# --------------------------------------------------------------------------------------------
# tools/verify_dataset.py
# --------------------------------------------------------------------------------------------


def test_verify_dataset_tool_end_to_end(tiny_shapes_root, tmp_path):
    # A copy of the tiny shapes dataset with one training image cut short, found through a
    # config's DATASETS.TRAIN / TEST as a user runs the tool.
    root = str(tmp_path / "datasets")
    shutil.copytree(os.path.join(tiny_shapes_root, "shapes"), os.path.join(root, "shapes"))
    bad = os.path.join(root, "shapes", "JPEGImages", "train_000003.jpg")
    data = open(bad, "rb").read()
    with open(bad, "wb") as f:
        f.write(data[:-300])
    env = {**os.environ, "DETKIT_DATASETS": root, "DETKIT_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [
            sys.executable,
            "tools/verify_dataset.py",
            "--config-file",
            "configs/quickstart/shapes.yaml",
            "--num-workers",
            "2",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Checked 20 images of shapes_train, shapes_test" in proc.stdout
    assert "(20 files decoded, 0 from the cache)" in proc.stdout
    assert "1 problem(s) in 1 image(s)" in proc.stdout
    assert f"shapes_train: {bad} (image_id 'train_000003') is truncated" in proc.stdout
    assert "truncated (1): The file was cut short" in proc.stdout


@pytest.fixture(scope="module")
def verify_tool():
    """tools/verify_dataset.py imported, to call its ``main(argv)`` in this process."""
    spec = importlib.util.spec_from_file_location(
        "verify_dataset_tool", os.path.join(ROOT, "tools", "verify_dataset.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_verify_dataset_tool_cache_and_arguments(
    verify_tool, tiny_shapes, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("DETKIT_CACHE", str(tmp_path / "cache"))
    train, test = tiny_shapes
    assert verify_tool.main(["--dataset", test]) == 0
    assert "Checked 4 images of tiny_shapes_test" in capsys.readouterr().out
    assert verify_tool.main(["--dataset", test, "--dataset", train]) == 0
    # The test set's 4 images were checked by the first call.
    assert "(16 files decoded, 4 from the cache)" in capsys.readouterr().out
    assert verify_tool.main(["--dataset", test, "--no-cache"]) == 0
    assert "(4 files decoded, 0 from the cache)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        verify_tool.main(["--dataset", "tiny_shapes_tset"])
    assert exit_.value.code == 2
    assert "unknown dataset(s) ['tiny_shapes_tset']" in capsys.readouterr().err
