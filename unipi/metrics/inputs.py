"""One explicit conversion of frames and videos into what the feature networks read.

Accepted, channels last as everywhere in the project (``(..., H, W, 3)``):

* ``uint8`` in [0, 255], read as ``x / 255``;
* floating point (float16/32/64) in [0, 1].

Anything else (other integer types, bool, floats outside [0, 1], NaN, a missing colour
axis) is refused with a message that names the array, what it held and the fix. The
same video given as uint8 ``v`` or as float ``v / 255`` becomes the same float32 tensor,
so every metric scores both forms alike.
"""

from __future__ import annotations

import numpy as np
import torch

FLOAT_SLACK = 1e-6  # float inputs may stray this far outside [0, 1] (rounding)


def to_unit_float(array, name: str = "video", ndim: int | None = None) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] (numpy or torch) -> float32 tensor in [0, 1].

    Args:
        array: ``(..., H, W, 3)``; ``ndim`` (if given) is the rank it must have, e.g. 4
            for frames ``(N, H, W, 3)`` or 5 for videos ``(B, F, H, W, 3)``.
        name: what the array is, for error messages.

    Returns:
        float32 tensor of the same shape on the CPU, values in [0, 1].
    """
    x = array.detach().cpu() if torch.is_tensor(array) else torch.from_numpy(np.asarray(array))
    if x.ndim < 3 or x.shape[-1] != 3 or (ndim is not None and x.ndim != ndim):
        want = f"{ndim}-d " if ndim is not None else ""
        raise ValueError(f"{name}: expected a {want}array (..., H, W, 3), channels last; "
                         f"got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if not x.is_floating_point():
        raise ValueError(f"{name}: dtype {x.dtype} is not accepted; pass uint8 in [0, 255] "
                         "or float in [0, 1]")
    if x.numel() == 0:
        return x.float()
    lo, hi = float(x.min()), float(x.max())
    if not np.isfinite([lo, hi]).all() or lo < -FLOAT_SLACK or hi > 1 + FLOAT_SLACK:
        hint = " (it looks like [0, 255]: divide by 255 or pass uint8)" if hi > 1.5 else ""
        raise ValueError(f"{name}: float values must lie in [0, 1]; got range "
                         f"[{lo:.4g}, {hi:.4g}]{hint}")
    return x.float().clamp(0.0, 1.0)
