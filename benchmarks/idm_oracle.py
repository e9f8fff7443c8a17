"""How far does inverse dynamics alone carry the agent? IDM on the expert's real frames.

    python benchmarks/idm_oracle.py --episodes 12          # the shipped IDM
    python benchmarks/idm_oracle.py --model MODEL_DIR

For seeded start states (seen instructions, seeds disjoint from training and from
``unipi eval``), the scripted expert's own frames play the part of a perfect plan,
subsampled at the IDM's chunk. Two ways of executing it from the same start:

- open loop: the IDM reads every action off consecutive expert frames; all are
  executed in order;
- tracking: at each chunk the IDM reads actions off (observed frame, next expert
  frame), so its own errors can be corrected.

Success is read from the simulator. Replaying the expert's own actions succeeds every
time (checked per episode), so a failure here is the IDM's. This bounds what the agent
can reach with perfect plans.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run(model, families, episodes: int, seed0: int) -> dict:
    import numpy as np
    import torch

    import envs
    from envs.expert import run_expert_episode
    from unipi.evaluate import _instructions
    from unipi.model_dir import load_idm, load_model_config

    torch.set_num_threads(1)
    cfg = load_model_config(model)
    idm = load_idm(model)
    chunk, steps = idm.config.chunk, 64
    results = {}
    for family in families:
        env = envs.make_env(family, image_size=tuple(cfg.env.image_size))
        texts = _instructions(family, "seen")
        counts = dict(replay=0, open_loop=0, tracking=0)
        for i in range(episodes):
            seed, text = seed0 + i, texts[i % len(texts)]
            ep = run_expert_episode(env, seed, instruction=text, max_steps=steps)
            frames = ep["frames"][::chunk]

            def execute(actions_of) -> bool:
                obs, info = env.reset(seed=seed, options={"instruction": text})
                success = False
                for k in range(len(frames) - 1):
                    for action in actions_of(k, obs):
                        obs, _, _, _, info = env.step(np.asarray(action, dtype=np.float32))
                        success = success or bool(info["success"])
                return success

            read = idm.predict(frames[:-1], frames[1:])  # (K, chunk, 4)
            counts["replay"] += execute(lambda k, obs: ep["actions"][k * chunk:(k + 1) * chunk])
            counts["open_loop"] += execute(lambda k, obs: read[k])
            counts["tracking"] += execute(lambda k, obs: idm.predict(obs["image"], frames[k + 1]))
        env.close()
        results[family] = {k: v / episodes for k, v in counts.items()} | {"episodes": episodes}
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="model folder (default: shipped weights)")
    p.add_argument("--families", default="place,relation")
    p.add_argument("--episodes", type=int, default=12, help="start states per family")
    p.add_argument("--seed", type=int, default=7_000_000, help="first seed")
    args = p.parse_args(argv)
    results = run(args.model, args.families.split(","), args.episodes, args.seed)
    print("| family | expert actions replayed | IDM open loop on expert frames "
          "| IDM tracking expert frames | episodes |")
    print("|---|---|---|---|---|")
    for family, r in results.items():
        print(f"| {family} | {r['replay']:.0%} | {r['open_loop']:.0%} | {r['tracking']:.0%} "
              f"| {r['episodes']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
