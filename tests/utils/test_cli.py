"""How tools end on an error (detkit.utils.cli): the message and a hint on stderr, the
traceback only on request, and always in the run's log file."""

import logging

import pytest

from detkit.utils.cli import int_at_least, run_cli


def _fail():
    raise ValueError("DATASETS.TRAIN names 'x', which is not registered.")


def test_an_error_is_its_message_and_exit_code_1(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("DETKIT_DEBUG", raising=False)
    monkeypatch.setattr("sys.argv", ["tool.py"])
    logger = logging.getLogger("detkit")
    handler = logging.FileHandler(tmp_path / "log.txt")
    logger.addHandler(handler)
    try:
        assert run_cli(_fail) == 1
    finally:
        logger.removeHandler(handler)
        handler.close()
    err = capsys.readouterr().err
    assert "Error (ValueError): DATASETS.TRAIN names 'x', which is not registered." in err
    assert "Traceback" not in err and "--debug or DETKIT_DEBUG=1" in err
    assert "It is also in " in err and str(tmp_path / "log.txt") in err  # among the run logs
    log = (tmp_path / "log.txt").read_text()
    assert "Traceback" in log and "in _fail" in log  # the frames are kept


@pytest.mark.parametrize("how", ["argument", "flag", "environment"])
def test_debug_shows_the_traceback(monkeypatch, how):
    monkeypatch.delenv("DETKIT_DEBUG", raising=False)
    monkeypatch.setattr("sys.argv", ["tool.py", "--debug"] if how == "flag" else ["tool.py"])
    if how == "environment":
        monkeypatch.setenv("DETKIT_DEBUG", "1")
    with pytest.raises(ValueError, match="not registered"):  # propagates unchanged
        run_cli(_fail, debug=how == "argument")


def test_exit_codes_and_interrupts(capsys, monkeypatch):
    monkeypatch.delenv("DETKIT_DEBUG", raising=False)
    monkeypatch.setattr("sys.argv", ["tool.py"])
    assert run_cli(lambda: None) == 0
    assert run_cli(lambda: 3) == 3
    assert run_cli(lambda: {"results": 1}) == 0  # a tool returning its results

    def interrupted():
        raise KeyboardInterrupt

    assert run_cli(interrupted) == 130
    assert "Interrupted." in capsys.readouterr().err
    monkeypatch.setenv("DETKIT_DEBUG", "0")  # "0" is off
    assert run_cli(_fail) == 1


def test_int_at_least():
    import argparse

    assert int_at_least(1)("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match="must be at least 1, got 0"):
        int_at_least(1)("0")
    with pytest.raises(argparse.ArgumentTypeError, match="expected a whole number, got 'x'"):
        int_at_least(0)("x")


def test_train_net_options_may_follow_the_key_value_pairs():
    from detkit.engine import default_argument_parser

    args = default_argument_parser().parse_args([
        "--config-file", "a.yaml", "SOLVER.BASE_LR", "0.1", "--resume", "--num-gpus", "2",
        "OUTPUT_DIR", "out", "--debug", "SOLVER.STEPS", "[-1]", "--dist-url=tcp://h:1",
    ])  # fmt: skip
    assert args.resume and args.debug and args.num_gpus == 2 and args.config_file == "a.yaml"
    assert args.dist_url == "tcp://h:1"
    assert args.opts == ["SOLVER.BASE_LR", "0.1", "OUTPUT_DIR", "out", "SOLVER.STEPS", "[-1]"]
