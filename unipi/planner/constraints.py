"""Flexible behaviour modulation: constraining a plan while it is sampled, no retraining.

The paper's third component (UniPi, Sec. 3 "Flexible behaviour modulation"): the video
model p(tau | x_0, c) is composed at test time with a prior over plans. Two priors:

``GoalImage``        a Dirac delta on the last frame: the plan must end in a given state.
                     The frame is pinned like the observation is (replaced at every
                     step by the goal noised to the step's level, exactly at the end);
                     optionally with reconstruction guidance (Ho et al. 2022, eq. 7).
``ClassifierGuidance``  a differentiable classifier on frames, p(y | x): the gradient of
                     log p(target | x0_hat) with respect to x_t steers every step
                     (Dhariwal & Nichol 2021, Alg. 2, with the classifier read on the
                     model's prediction of the clean video).

Notation (as in ``unipi.planner.diffusion``)::

    x_t        the sample at step t, in the diffused space (image, or x - x_0 when
               ``diffusion.residual``), (B, 3, F, H, W)
    abar       alphas_cumprod[t];  x_t = sqrt(abar) x0 + sqrt(1 - abar) eps
    x0_hat     the model's clean prediction: sqrt(abar) x_t - sqrt(1 - abar) v  (v-pred)
               or (x_t - sqrt(1 - abar) eps) / sqrt(abar)  (eps-pred)
    g          gradient of the guidance objective w.r.t. x_t, through the U-Net

Guidance changes the prediction, then the scheduler's step is taken as usual::

    classifier:      x0' = x0_hat + w (1 - abar) / sqrt(abar) * grad_{x_t} log p(y | x0_hat)
                     (the same as eps' = eps - w sqrt(1 - abar) grad log p)
    reconstruction:  x0' = x0_hat - (w_r sqrt(abar) / 2) * grad_{x_t} ||goal - x0_hat[-1]||^2

and x0' is turned back into the model's output type (v or eps) at the same x_t. Both
objectives read x0_hat in image space ([-1, 1]; the first frame is added back when the
target is residual), so a classifier always sees frames like the ones it was trained
on. A weight of 0 adds no term: the loop then runs exactly the unconstrained code.

With the hierarchy the constraints act on the base (keyframe) stage: the goal pins the
last keyframe, which is a known frame of the temporal super-resolution stage, so the
full plan ends exactly at the goal too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from unipi.planner.config import DiffusionConfig


# ----------------------------------------------------------------------- the priors
@dataclass
class GoalImage:
    """Pin the plan's last frame to ``image`` (B, 3, H, W) in [-1, 1], image space.

    ``guidance`` > 0 adds reconstruction guidance of that weight (w_r), so the frames
    before the pinned one are pulled toward agreeing with it.
    """

    image: torch.Tensor
    guidance: float = 0.0
    frame: int = -1  # which frame of the stage is pinned

    def objective(self, x0: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
        """-(w_r sqrt(abar) / 2) ||goal - x0_hat[frame]||^2, summed over the batch."""
        err = (self.image.to(x0) - x0[:, :, self.frame]).square().sum()
        return -0.5 * self.guidance * abar.sqrt() * err


@dataclass
class ClassifierGuidance:
    """Steer toward class ``target`` of ``classifier`` read on frame ``frame`` of x0_hat.

    ``classifier``: frames (N, 3, H, W) in [-1, 1] -> logits (N, C); differentiable in
    its input (``check_classifier`` probes it).
    """

    classifier: nn.Module
    target: int
    weight: float
    frame: int = -1

    def objective(self, x0: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
        """w (1 - abar) / sqrt(abar) * sum_b log p(target | x0_hat[b, :, frame])."""
        logp = F.log_softmax(self.classifier(x0[:, :, self.frame]).float(), dim=-1)
        return self.weight * (1 - abar) / abar.sqrt() * logp[:, self.target].sum()


Constraint = GoalImage | ClassifierGuidance


# ----------------------------------------------------------------------- refusals
def goal_tensor(goal, batch: int, size: tuple[int, int]) -> torch.Tensor:
    """A goal image uint8 (H, W, 3) or (B, H, W, 3) -> float (batch, 3, H, W) in [-1, 1].

    Refuses another dtype, a size other than the observation's ``size`` (H, W), or a
    batch other than 1 or ``batch``.
    """
    arr = goal.cpu().numpy() if torch.is_tensor(goal) else np.asarray(goal)
    h, w = size
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or arr.shape[-3:] != (h, w, 3):
        raise ValueError(
            f"goal_image: expected uint8 (H, W, 3) or (B, H, W, 3) with H, W = {h}, {w} "
            f"(the observation's size), got {arr.dtype} {arr.shape}; render or resize the "
            f"goal to {w}x{h} RGB")
    arr = arr[None] if arr.ndim == 3 else arr
    if len(arr) not in (1, batch):
        raise ValueError(f"goal_image: {len(arr)} goals for {batch} observations; give one "
                         "goal or one per observation")
    arr = np.broadcast_to(arr, (batch, h, w, 3))
    return torch.from_numpy(arr.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2)


def check_classifier(classifier, size: tuple[int, int], target: int,
                     device: torch.device | str = "cpu") -> None:
    """Refuse a guide that is not a differentiable classifier of (N, 3, H, W) frames.

    Runs one probe: a seeded random frame of ``size`` goes in, and the log-probability
    of ``target`` must be a finite (N, C) output whose gradient reaches the input.
    """
    if not callable(classifier):
        raise ValueError(f"guide: {type(classifier).__name__} is not callable; pass a torch "
                         "module mapping frames (N, 3, H, W) to logits (N, C)")
    h, w = size
    g = torch.Generator().manual_seed(0)
    probe = (torch.rand(1, 3, h, w, generator=g) * 2 - 1).to(device).requires_grad_(True)
    with torch.enable_grad():
        try:
            logits = classifier(probe)
        except (RuntimeError, ValueError) as err:
            raise ValueError(f"guide: the classifier cannot read planner frames (1, 3, {h}, "
                             f"{w}): {str(err).splitlines()[0]}; train it at env.image_size="
                             f"[{h}, {w}]") from None
        if not torch.is_tensor(logits) or logits.ndim != 2 or logits.shape[0] != 1:
            shape = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
            raise ValueError(f"guide: the classifier returned {shape} for one frame; "
                             "expected logits (1, C)")
        if not 0 <= target < logits.shape[1]:
            raise ValueError(f"guide_target={target}: the classifier has {logits.shape[1]} "
                             f"classes, accepted 0..{logits.shape[1] - 1}")
        if not logits.requires_grad:
            raise ValueError("guide: the classifier's output carries no gradient (no_grad, "
                             "detach, numpy or argmax inside?); classifier guidance needs a "
                             "classifier differentiable in its input frames")
        logp = F.log_softmax(logits.float(), dim=-1)[0, target]
        (grad,) = torch.autograd.grad(logp, probe, allow_unused=True)
    if grad is None or not torch.isfinite(grad).all() or not grad.abs().sum() > 0:
        raise ValueError("guide: the gradient of log p(target | frame) does not reach the "
                         "input frame (or is not finite); classifier guidance needs a "
                         "classifier differentiable in its input frames")


def make_constraints(batch: int, size: tuple[int, int], device, goal_image=None,
                     goal_guidance: float = 0.0, guide=None, guide_weight: float = 0.0,
                     guide_target: int | str | None = None) -> list[Constraint]:
    """The constraints a pipeline call asks for, checked; [] when it asks for none.

    Args:
        batch, size: observations in the call and their (H, W).
        goal_image: uint8 (H, W, 3) or (B, H, W, 3), or None.
        goal_guidance: reconstruction-guidance weight toward the goal (0 = pin only).
        guide: a differentiable classifier (see ``check_classifier``), or None.
        guide_weight: classifier-guidance weight; 0 = unguided (``guide`` unused).
        guide_target: class index, or a name of ``guide.config.classes``; default the
            classifier's ``config.default_class`` (or 0).
    """
    if not np.isfinite(guide_weight) or not np.isfinite(goal_guidance):
        raise ValueError(f"guide_weight={guide_weight}, goal_guidance={goal_guidance}: "
                         "must be finite numbers")
    if goal_guidance < 0:
        raise ValueError(f"goal_guidance={goal_guidance}: must be >= 0 (0 = pin only)")
    if goal_guidance and goal_image is None:
        raise ValueError(f"goal_guidance={goal_guidance} needs a goal: pass goal_image")
    if guide_weight and guide is None:
        raise ValueError(f"guide_weight={guide_weight} needs a classifier: pass guide "
                         "(e.g. FrameClassifier.from_pretrained(DIR)), or set guide_weight=0")
    out: list[Constraint] = []
    if goal_image is not None:
        out.append(GoalImage(goal_tensor(goal_image, batch, size).to(device), goal_guidance))
    if guide is not None:
        target = resolve_target(guide, guide_target)
        check_classifier(guide, size, target, _device_of(guide, device))
        if guide_weight:
            out.append(ClassifierGuidance(guide, target, float(guide_weight)))
    return out


def resolve_target(classifier, target: int | str | None) -> int:
    """A class index from an index, a class name (``classifier.config.classes``) or None."""
    config = getattr(classifier, "config", None)
    classes = list(getattr(config, "classes", None) or [])
    if target is None:
        default = getattr(config, "default_class", None)
        return classes.index(default) if default in classes else 0
    if isinstance(target, str) and not target.lstrip("-").isdigit():
        if target not in classes:
            raise ValueError(f"guide_target={target!r}: accepted class names are {classes}")
        return classes.index(target)
    return int(target)


def _device_of(module, default):
    params = list(module.parameters()) if isinstance(module, nn.Module) else []
    return params[0].device if params else default


# ------------------------------------------------------------------ inside sampling
def predicted_x0(out: torch.Tensor, x_t: torch.Tensor, abar: torch.Tensor,
                 prediction_type: str) -> torch.Tensor:
    """The model output (v, eps or x0) at x_t -> its clean prediction x0_hat."""
    if prediction_type == "v_prediction":
        return abar.sqrt() * x_t - (1 - abar).sqrt() * out
    if prediction_type == "epsilon":
        return (x_t - (1 - abar).sqrt() * out) / abar.sqrt()
    if prediction_type == "sample":
        return out
    raise ValueError(f"prediction_type={prediction_type!r}: guidance supports "
                     "'v_prediction', 'epsilon' and 'sample'")


def output_from_x0(x0: torch.Tensor, x_t: torch.Tensor, abar: torch.Tensor,
                   prediction_type: str) -> torch.Tensor:
    """Inverse of ``predicted_x0``: the v, eps or x0 that predicts ``x0`` at ``x_t``."""
    if prediction_type == "sample":
        return x0
    eps = (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()
    if prediction_type == "epsilon":
        return eps
    return abar.sqrt() * eps - (1 - abar).sqrt() * x0


class StageConstraints:
    """Constraints bound to one sampling stage: frame indices resolved and pinned values
    in that stage's diffused space. ``sample_video(..., constraints=)`` takes one.

    Args:
        constraints: ``GoalImage`` / ``ClassifierGuidance`` (image-space).
        first: the observation (B, 3, H, W) in [-1, 1], for the residual space.
        num_frames: F of the stage.
        diffusion: the planner's diffusion config (``residual``).
    """

    def __init__(self, constraints: Sequence[Constraint], first: torch.Tensor,
                 num_frames: int, diffusion: DiffusionConfig) -> None:
        self.first, self.residual = first, diffusion.residual
        self.pins: dict[int, torch.Tensor] = {}
        self.guides: list[Constraint] = []
        for c in constraints:
            frame = c.frame % num_frames
            if isinstance(c, GoalImage):
                self.pins[frame] = c.image - first if self.residual else c.image
                if c.guidance > 0:
                    self.guides.append(GoalImage(c.image, c.guidance, frame))
            elif c.weight != 0:
                self.guides.append(ClassifierGuidance(c.classifier, c.target, c.weight, frame))

    def with_pins(self, known: list[int], known_values: torch.Tensor | None):
        """Add the pinned frames to the stage's known frames: (known, known_values)."""
        if not self.pins:
            return known, known_values
        values = dict(zip(known, known_values.unbind(2))) if known else {}
        values.update(self.pins)
        frames = sorted(values)
        return frames, torch.stack([values[f] for f in frames], dim=2)

    def to_image(self, x0: torch.Tensor) -> torch.Tensor:
        """Diffused space -> image space (unclamped, so gradients pass everywhere)."""
        return x0 + self.first[:, :, None] if self.residual else x0

    def guided_output(self, denoise: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                      t: torch.Tensor, scheduler) -> torch.Tensor:
        """The model output at ``x`` (B, 3, F, H, W), changed by every guidance term.

        ``denoise(x) -> output`` runs the (classifier-free guided) U-Net once; here it
        runs with gradients so that x0_hat can be differentiated w.r.t. x_t.
        """
        if not self.guides:
            return denoise(x)
        ptype = scheduler.config.prediction_type
        abar = scheduler.alphas_cumprod.to(x.device)[t].float()

        # 1. x0_hat(x_t) with the graph through the U-Net
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            out = denoise(x_in)
            x0 = predicted_x0(out.float(), x_in, abar, ptype)

            # 2. one backward of the summed, already-scaled objectives
            image = self.to_image(x0)
            objective = sum(c.objective(image, abar) for c in self.guides)
            (grad,) = torch.autograd.grad(objective, x_in)

        # 3. move the prediction, then express it in the model's output type
        x0 = x0.detach() + grad.nan_to_num(0.0)
        return output_from_x0(x0, x, abar, ptype).to(out.dtype)
