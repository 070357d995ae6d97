"""detkit.utils.cli: options anywhere among the config overrides, ``--opts`` and
``KEY=VALUE``."""

from __future__ import annotations

import argparse

import pytest

from detkit.utils.cli import (
    add_config_overrides_arguments,
    add_debug_argument,
    looks_like_config_key,
    parse_args_anywhere,
    split_config_overrides,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config-file")
    parser.add_argument("--input", nargs="+", default=[])
    parser.add_argument(
        "--score-thresh", "--confidence-threshold", dest="score_thresh", type=float, default=0.5
    )
    add_config_overrides_arguments(parser)
    add_debug_argument(parser)
    return parser


def test_key_equals_value_is_split_only_in_a_key_place():
    assert split_config_overrides(["SEED=1", "OUTPUT_DIR", "out=a", "MODEL.WEIGHTS=w.pth"]) == [
        "SEED", "1", "OUTPUT_DIR", "out=a", "MODEL.WEIGHTS", "w.pth",
    ]  # fmt: skip
    assert split_config_overrides(["SOLVER.STEPS=[1,2]", "X.Y=a=b"]) == [
        "SOLVER.STEPS", "[1,2]", "X.Y", "a=b",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="'SEED' has no value: write KEY VALUE or KEY=VALUE"):
        split_config_overrides(["OUTPUT_DIR", "out", "SEED"])


@pytest.mark.parametrize(
    "argv",
    [
        # trailing pairs, options first
        ["--config-file", "a.yaml", "--score-thresh", "0.7", "SEED", "-1", "OUTPUT_DIR", "o"],
        # options after and between the pairs, detectron2's names
        ["SEED", "-1", "--confidence-threshold", "0.7", "OUTPUT_DIR=o", "--config-file=a.yaml"],
        # --opts with options after it
        [
            "--config-file",
            "a.yaml",
            "--opts",
            "SEED",
            "-1",
            "OUTPUT_DIR",
            "o",
            "--score-thresh",
            "0.7",
        ],
        # --opts and trailing pairs together
        ["--opts", "SEED=-1", "--config-file", "a.yaml", "--score-thresh", "0.7", "OUTPUT_DIR=o"],
    ],
)
def test_every_form_gives_the_same_arguments(argv):
    args = parse_args_anywhere(_parser(), argv)
    assert args.config_file == "a.yaml" and args.score_thresh == 0.7
    assert args.opts == ["SEED", "-1", "OUTPUT_DIR", "o"]
    assert not hasattr(args, "opts_flag")


def test_a_multi_value_option_stops_at_the_next_option_or_config_key(tmp_path, monkeypatch):
    argv = ["--input", "a.jpg", "dir/", "MODEL.WEIGHTS", "w.pth", "--debug"]
    args = parse_args_anywhere(_parser(), argv)
    assert args.input == ["a.jpg", "dir/"] and args.debug
    assert args.opts == ["MODEL.WEIGHTS", "w.pth"]
    # An existing file whose name reads like a key is a file, not an override.
    monkeypatch.chdir(tmp_path)
    assert looks_like_config_key("IMG.JPG")
    (tmp_path / "IMG.JPG").write_bytes(b"")
    assert not looks_like_config_key("IMG.JPG")
    args = parse_args_anywhere(_parser(), ["--input", "b.jpg", "IMG.JPG", "SEED", "3"])
    assert args.input == ["b.jpg", "IMG.JPG"] and args.opts == ["SEED", "3"]


def test_a_key_without_value_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        parse_args_anywhere(_parser(), ["MODEL.WEIGHTS", "w.pth", "SEED", "--debug"])
    assert stop.value.code == 2
    assert "'SEED' has no value" in capsys.readouterr().err
