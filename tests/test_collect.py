"""`unipi collect`: real expert episodes on disk, resume after a kill, bad input."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from unipi.cli import main
from unipi.data import EpisodeStore
from unipi.data.collect import collect
from unipi.seeds import EVAL_SEED_START


def test_collect_writes_successful_labelled_episodes(tmp_path):
    counts = collect(tmp_path, 4, families=("place", "relation"), labelled_fraction=0.5,
                     episode_steps=56, progress=False)
    assert counts["kept"] == 4
    store = EpisodeStore(tmp_path)
    assert sorted(e.record.seed for e in store.episodes) == [0, 1, 2, 3]
    assert {e.record.family for e in store.episodes} == {"place", "relation"}
    for ep in store.episodes:
        assert ep.record.success and ep.record.split == "seen"
        assert ep.record.seed < EVAL_SEED_START
        assert ep.frames.shape == (57, 32, 32, 3)
        assert (ep.actions is not None) == ep.record.labelled
    assert sum(e.record.labelled for e in store.episodes) == 2


def _wait_for(path, n, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        if len(list(path.glob("seed_*.parquet"))) >= n:
            return
        time.sleep(0.05)
    raise TimeoutError(f"fewer than {n} episodes in {path} after {timeout} s")


def test_killed_collection_resumes_to_the_same_dataset(tmp_path):
    args = ["--env", "all", "--episodes", "30", "--episode-steps", "40"]
    straight = tmp_path / "straight"
    assert main(["collect", *args, "--out", str(straight)]) == 0

    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "unipi.cli", "collect", *args, "--out", str(killed)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "MUJOCO_GL": "egl"})
    _wait_for(killed / "episodes", 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(list((killed / "episodes").glob("seed_*.parquet")))
    assert 2 <= partial < 30  # killed part-way: the re-run below has work left to do
    EpisodeStore(killed)  # what is there is whole and readable

    assert main(["collect", *args, "--out", str(killed)]) == 0
    a, b = EpisodeStore(straight), EpisodeStore(killed)
    assert [e.record for e in a.episodes] == [e.record for e in b.episodes]
    for ea, eb in zip(a.episodes, b.episodes):
        np.testing.assert_array_equal(ea.frames, eb.frames)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--env", "kitchen"], "'kitchen'"),
        (["--episodes", "0"], "--episodes 0"),
        (["--episodes", "-3"], "--episodes -3"),
        (["--labelled-fraction", "1.5"], "--labelled-fraction 1.5"),
        (["--split", "unseen"], "'unseen'"),
    ],
)
def test_collect_bad_input_is_one_line(tmp_path, capsys, argv, message):
    base = {"--env": "place", "--episodes": "2"}
    for flag, value in zip(argv[::2], argv[1::2]):
        base[flag] = value
    flat = [x for kv in base.items() for x in kv]
    assert main(["collect", *flat, "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_collect_refuses_a_folder_of_something_else(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["collect", "--episodes", "1", "--out", str(tmp_path)]) == 2
    assert "holds no unipi dataset" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_collect_refuses_a_dataset_of_other_settings(tmp_path, capsys):
    assert main(["collect", "--episodes", "1", "--episode-steps", "30",
                 "--out", str(tmp_path)]) == 0
    assert main(["collect", "--episodes", "2", "--image-size", "16x16",
                 "--episode-steps", "30", "--out", str(tmp_path)]) == 2
    assert "other settings" in capsys.readouterr().err
