"""The episode format: round trip, clips, pairs, atomic writes and corrupt files."""

import json

import numpy as np
import pytest

from unipi.data import ClipDataset, DatasetFormatError, EpisodeRecord, EpisodeStore, PairDataset
from unipi.data.collect import is_labelled
from unipi.data.format import episode_path, read_info, write_episode, write_info


def _fake_episode(root, seed, length=10, labelled=True, size=(8, 8)):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (length + 1, *size, 3), dtype=np.uint8)
    frames[:, 0, 0, 0] = np.arange(length + 1)  # frame index readable from pixel (0, 0)
    states = rng.normal(size=(length + 1, 4)).astype(np.float32)
    actions = rng.uniform(-1, 1, (length, 4)).astype(np.float32)
    rec = EpisodeRecord(seed=seed, family="place", instruction=f"place the red block in the "
                        f"{'blue' if seed % 2 else 'green'} bowl", split="seen", success=True,
                        labelled=labelled, length=length)
    write_episode(root, rec, frames, states, actions if labelled else None)
    return frames, states, actions


@pytest.fixture
def dataset(tmp_path):
    write_info(tmp_path, {"image_size": [8, 8], "action_dim": 4})
    eps = {s: _fake_episode(tmp_path, s, labelled=s < 3) for s in range(5)}
    return tmp_path, eps


def test_round_trip(dataset):
    root, eps = dataset
    store = EpisodeStore(root)
    assert len(store) == 5
    for ep in store.episodes:
        frames, states, actions = eps[ep.record.seed]
        np.testing.assert_array_equal(ep.frames, frames)
        np.testing.assert_allclose(ep.states, states)
        if ep.record.labelled:
            np.testing.assert_allclose(ep.actions, actions)
        else:
            assert ep.actions is None


def test_clip_dataset_stride_and_clamp(dataset):
    root, _ = dataset
    clips = ClipDataset(root, num_frames=4, stride=3)
    assert len(clips) == 5 * 10
    item = clips[7]  # episode 0, start 7: frames 7, 10, 10, 10
    assert item["video"].shape == (4, 8, 8, 3)
    assert item["video"][:, 0, 0, 0].tolist() == [7, 10, 10, 10]
    assert item["instruction"].startswith("place the red block")


def test_clip_dataset_max_start(dataset):
    root, _ = dataset
    clips = ClipDataset(root, num_frames=4, stride=3, max_start=4)
    assert len(clips) == 5 * 4
    assert [clips[i]["video"][0, 0, 0, 0].item() for i in range(4)] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="max_start=0"):
        ClipDataset(root, num_frames=4, stride=3, max_start=0)


def test_pair_dataset_uses_labelled_only_and_splits_by_episode(dataset):
    root, eps = dataset
    train = PairDataset(root, stride=4, subset="train", val_fraction=0.34)
    val = PairDataset(root, stride=4, subset="val", val_fraction=0.34)
    train_seeds = {ep.record.seed for ep in train.episodes}
    val_seeds = {ep.record.seed for ep in val.episodes}
    assert train_seeds | val_seeds == {0, 1, 2} and not train_seeds & val_seeds
    item = train[8]  # episode seed 0, t=8: frames 8 and 10, actions 8, 9, then zeros
    assert item["frames"][:, 0, 0, 0].tolist() == [8, 10]
    np.testing.assert_allclose(item["actions"][:2], eps[0][2][8:10])
    assert (item["actions"][2:] == 0).all()


def test_corrupt_episode_is_named(dataset):
    root, _ = dataset
    path = episode_path(root, 3)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DatasetFormatError, match="seed_00000003.parquet"):
        EpisodeStore(root)


def test_other_format_refused(tmp_path):
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "info.json").write_text(json.dumps({"format": "lerobot", "version": 3}))
    with pytest.raises(DatasetFormatError, match="lerobot"):
        read_info(tmp_path)
    with pytest.raises(DatasetFormatError, match="missing"):
        EpisodeStore(tmp_path / "nowhere")


def test_labelled_fraction_is_exact_over_consecutive_seeds():
    assert sum(is_labelled(s, 0.1) for s in range(1000)) == 100
    assert sum(is_labelled(s, 0.25) for s in range(20)) == 5
    assert not any(is_labelled(s, 0.0) for s in range(50))
    assert all(is_labelled(s, 1.0) for s in range(50))
