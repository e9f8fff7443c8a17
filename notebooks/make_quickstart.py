"""Writes quickstart.ipynb (cells kept here so that diffs stay readable).

    python notebooks/make_quickstart.py
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    new_markdown_cell("""# UniPi quickstart

A universal policy in four steps, with the agent that ships inside the package:

1. **observe** the simulated tabletop through the robot's camera,
2. **plan**: the text-conditioned video model imagines the robot doing what it is told,
   starting from exactly that image,
3. **act**: the inverse-dynamics model reads actions off consecutive imagined frames; the
   agent executes them and re-plans from what it sees,
4. **evaluate** success over seeded episodes of seen and novel instructions.

Set `UNIPI_MODEL` to a model folder written by `unipi export` to use your own models."""),
    new_code_cell("""import io, os
import imageio.v3 as iio
import numpy as np
import torch
from IPython.display import Image, display

import envs
from unipi.agent import UniPiAgent
from unipi.model_dir import load_idm, load_model_config, load_planner
from unipi.video import side_by_side

MODEL = os.environ.get("UNIPI_MODEL") or None  # None: the shipped default agent
EPISODES = int(os.environ.get("UNIPI_QUICKSTART_EPISODES", "2"))
torch.set_num_threads(2)

cfg = load_model_config(MODEL)
pipe, idm = load_planner(MODEL), load_idm(MODEL)
print("planner frames:", pipe.planner.num_frames, "at", cfg.env.image_size,
      "| env steps between frames:", idm.config.chunk)


def show(frames, fps=4):
    \"\"\"Show uint8 (T, H, W, 3) frames as an animated gif (or one frame as a png).\"\"\"
    frames = np.asarray(frames)
    if frames.ndim == 3:
        display(Image(data=iio.imwrite("<bytes>", frames, extension=".png")))
    else:
        display(Image(data=iio.imwrite("<bytes>", frames, extension=".gif",
                                       duration=1000 / fps, loop=0)))"""),
    new_markdown_cell("## 1. Observe\nA seeded start state; the instruction is a novel "
                      "combination (never seen in training)."),
    new_code_cell("""from envs.tasks import tasks_in_split

instruction = tasks_in_split("place", "novel")[0].instruction
env = envs.make_env("place", render_mode="rgb_array", image_size=tuple(cfg.env.image_size))
obs, info = env.reset(seed=10_000_123, options={"instruction": instruction})
print(instruction, "| split:", info["split"])
show(np.kron(obs["image"], np.ones((4, 4, 1), np.uint8)))"""),
    new_markdown_cell("## 2. Plan\nKeyframes from the base model, the frames between them "
                      "from temporal super-resolution; frame 0 is the observation."),
    new_code_cell("""out = pipe(obs["image"], instruction, generator=torch.Generator().manual_seed(0))
plan = out.videos[0]
assert (plan[0] == obs["image"]).all()
print("plan:", plan.shape)
show(side_by_side([plan]))"""),
    new_markdown_cell("## 3. Act\nClosed loop: execute part of the plan, observe, re-plan."),
    new_code_cell("""agent = UniPiAgent(pipe, idm, cfg.agent)
result = agent.run_episode(env, seed=10_000_123, instruction=instruction)
print("success:", result.success, "| steps:", result.steps, "| plans:", result.num_plans,
      f"| {result.wall_time:.1f} s")
show(side_by_side([result.plans[0], result.frames[::idm.config.chunk]]))"""),
    new_markdown_cell("## 4. Evaluate\nSeeded episodes per family and split, seeds disjoint "
                      "from every training seed. `unipi eval` does the same from the shell."),
    new_code_cell("""from unipi.evaluate import evaluate, format_table

info = evaluate(agent, episodes=EPISODES, out_dir="outputs/quickstart", video_episodes=0,
                image_size=tuple(cfg.env.image_size))
print(format_table(info["summary"]))"""),
]


def main() -> None:
    nb = new_notebook(cells=CELLS, metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}})
    path = Path(__file__).with_name("quickstart.ipynb")
    nbformat.write(nb, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
