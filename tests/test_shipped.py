"""The agent that ships in the package: its weights load, plan from a real observation,
and the quickstart notebook runs top to bottom with them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from unipi.model_dir import DEFAULT_MODEL_DIR, load_idm, load_model_config, load_planner

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_weights_are_small_and_complete():
    files = [p for p in DEFAULT_MODEL_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 50e6
    for name in ("config.json", "MODEL_CARD.md", "training.json", "planner/planner.json",
                 "idm/config.json"):
        assert (DEFAULT_MODEL_DIR / name).is_file(), name
    facts = json.loads((DEFAULT_MODEL_DIR / "training.json").read_text())
    assert set(facts["stages"]) == {"base", "tsr", "idm"}


def test_shipped_plan_starts_at_the_observation():
    import envs

    cfg = load_model_config(None)
    pipe, idm = load_planner(None), load_idm(None)
    env = envs.make_env("place", image_size=tuple(cfg.env.image_size))
    obs, info = env.reset(seed=10_000_007)
    out = pipe(obs["image"], info["instruction"], num_inference_steps=4,
               generator=torch.Generator().manual_seed(0))
    plan = out.videos[0]
    assert plan.shape == (pipe.planner.num_frames, *obs["image"].shape)
    np.testing.assert_array_equal(plan[0], obs["image"])
    actions = idm.predict(plan[:-1], plan[1:])
    assert actions.shape == (len(plan) - 1, idm.config.chunk, 4)
    assert np.isfinite(actions).all() and np.abs(actions).max() <= 1.0


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("UNIPI_QUICKSTART_EPISODES", "1")
    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                      for out in cell.get("outputs", []))
    assert "success:" in printed and "| unipi |" in printed
