"""Segmentation networks: a U-Net around segmentation-models-pytorch.

Pretrained encoder weights are never downloaded: ``encoder_weights="imagenet"``
is accepted only when the weights are already in the local Hugging Face cache
(where segmentation-models-pytorch looks for them); otherwise
:class:`EncoderWeightsError` says how to provide them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.encoders import encoders as SMP_ENCODERS
from segmentation_models_pytorch.encoders.resnet import ResNetEncoder
from torch import nn

from synthsat.data.cache import scaled_shape

WEIGHT_FILES = ("config.json", "model.safetensors")


class EncoderWeightsError(RuntimeError):
    """Pretrained encoder weights were asked for but are not available offline."""


def cached_encoder_weights(encoder_name: str, weights: str) -> Path:
    """The local file of pretrained ``weights`` for ``encoder_name``.

    Args:
        encoder_name: a segmentation-models-pytorch encoder name, e.g. ``resnet18``.
        weights: a pretrained variant of that encoder, e.g. ``imagenet``.

    Returns:
        the path of the cached ``model.safetensors``.

    Raises:
        EncoderWeightsError: unknown variant, or the files are not in the local cache.
    """
    from huggingface_hub import try_to_load_from_cache

    if encoder_name not in SMP_ENCODERS:
        raise EncoderWeightsError(
            f"encoder '{encoder_name}': pretrained weights are only supported for "
            "segmentation-models-pytorch encoders (e.g. resnet18, resnet50); "
            "use segmentation.encoder_weights=null"
        )
    settings = SMP_ENCODERS[encoder_name]["pretrained_settings"]
    if weights not in settings:
        raise EncoderWeightsError(
            f"encoder '{encoder_name}' has no '{weights}' weights "
            f"(available: {', '.join(settings)}); use segmentation.encoder_weights=null"
        )
    repo_id, revision = settings[weights]["repo_id"], settings[weights]["revision"]
    found: dict[str, Path] = {}
    for name in WEIGHT_FILES:
        path = try_to_load_from_cache(repo_id, name, revision=revision)
        if isinstance(path, str):
            found[name] = Path(path)
    missing = [n for n in WEIGHT_FILES if n not in found]
    if missing:
        raise EncoderWeightsError(
            f"'{weights}' weights of encoder '{encoder_name}' are not in the local Hugging "
            f"Face cache (missing {', '.join(missing)} of {repo_id} at revision {revision}) "
            "and synthsat never downloads weights. Provide them on a machine with network "
            f"access with `huggingface-cli download {repo_id} --revision {revision}` and "
            "copy the cache (HF_HOME, default ~/.cache/huggingface) here, or train from "
            "scratch with segmentation.encoder_weights=null"
        )
    return found["model.safetensors"]


def build_unet(
    in_channels: int,
    classes: int,
    encoder_name: str = "resnet18",
    encoder_weights: str | None = None,
    encoder_depth: int = 5,
    decoder_channels: Sequence[int] | None = None,
    keep_unused_stages: bool = False,
) -> nn.Module:
    """A U-Net returning per-class logits (B, classes, H, W).

    Args:
        in_channels: image bands.
        classes: number of classes (output channels).
        encoder_name: segmentation-models-pytorch encoder, e.g. ``resnet18`` or ``resnet50``.
        encoder_weights: None (random init) or a pretrained variant such as ``imagenet``
            (must already be cached locally, see :func:`cached_encoder_weights`).
        encoder_depth: encoder stages (3..5); input sides must be multiples of
            ``2 ** encoder_depth``.
        decoder_channels: decoder widths, one per encoder stage (default: smp's
            ``256, 128, 64, 32, 16`` truncated to ``encoder_depth``).
        keep_unused_stages: keep the encoder stages deeper than ``encoder_depth`` that the
            forward never runs (the network as checkpoints from before
            :func:`drop_unused_stages` held it); by default they are dropped.

    Raises:
        EncoderWeightsError: pretrained weights requested but not available offline.
        ValueError: bad sizes.
    """
    if in_channels < 1 or classes < 2:
        raise ValueError(
            f"a U-Net needs in_channels >= 1 and classes >= 2, got "
            f"in_channels={in_channels}, classes={classes}"
        )
    if not 3 <= encoder_depth <= 5:
        raise ValueError(f"encoder_depth must be 3, 4 or 5, got {encoder_depth}")
    if decoder_channels is None:
        decoder_channels = (256, 128, 64, 32, 16)[5 - encoder_depth :]
    if len(decoder_channels) != encoder_depth:
        raise ValueError(
            f"decoder_channels needs {encoder_depth} values (one per encoder "
            f"stage), got {list(decoder_channels)}"
        )
    if encoder_weights is not None:
        cached_encoder_weights(encoder_name, encoder_weights)
    elif encoder_name not in SMP_ENCODERS and not encoder_name.startswith("tu-"):
        raise ValueError(
            f"unknown encoder '{encoder_name}' (segmentation-models-pytorch "
            f"encoders: {', '.join(sorted(SMP_ENCODERS)[:12])}, ...)"
        )
    unet = smp.Unet(
        encoder_name=encoder_name,
        encoder_weights=encoder_weights,
        encoder_depth=encoder_depth,
        decoder_channels=list(decoder_channels),
        in_channels=in_channels,
        classes=classes,
    )
    if not keep_unused_stages:
        drop_unused_stages(unet)
    return unet


def unused_stages(unet: nn.Module) -> tuple[str, ...]:
    """Names (relative to ``unet``, e.g. ``encoder.layer4``) of the encoder stages that a
    U-Net of depth < 5 never runs, whether still present or already dropped.

    Only ResNet-family encoders are trimmed (their forward stops at the encoder depth);
    other encoders keep every stage (empty tuple).
    """
    encoder = getattr(unet, "encoder", None)
    if not isinstance(encoder, ResNetEncoder):
        return ()
    # ResNet stages by output stride: layer1 2**2, layer2 2**3, layer3 2**4, layer4 2**5
    return tuple(f"encoder.layer{i}" for i in range(1, 5) if i + 1 > encoder._depth)


def drop_unused_stages(unet: nn.Module) -> tuple[str, ...]:
    """Remove the encoder stages that ``unet``'s forward never runs (see :func:`unused_stages`),
    so they are neither counted, trained nor saved; the forward is unchanged.

    smp builds a whole ResNet whatever the depth: at depth 3, resnet18's layer3 and layer4
    hold 10.5 M of the U-Net's 11.3 M parameters.

    Returns:
        the names of the dropped stages, relative to ``unet``.
    """
    names = unused_stages(unet)
    for name in names:
        module, attr = name.split(".")
        parent = getattr(unet, module)
        if attr in parent._modules:
            delattr(parent, attr)
    return names


def drop_unused_stage_keys(
    state_dict: dict[str, object], prefixes: Sequence[str]
) -> dict[str, object]:
    """``state_dict`` without the entries under any of ``prefixes`` (unused encoder stages
    saved by checkpoints from before they were dropped); a new dict, the order kept."""
    heads = tuple(f"{p}." for p in prefixes)
    return {k: v for k, v in state_dict.items() if not k.startswith(heads)}


def native_logits(
    network: nn.Module, x: torch.Tensor, scale: float, multiple: int, channels_last: bool
) -> torch.Tensor:
    """Logits (B, K, H, W) of ``network`` on normalised images ``x`` (B, C, H, W) of any
    size, at their native resolution.

    A network trained at ``scale`` < 1 (``data.scale``) sees the images area-resampled by
    that factor, and its logits are resized back (bilinear) to (H, W). Images are padded at
    the bottom-right (reflect, or replicate for tiny ones) to a multiple of ``multiple``
    (``2 ** encoder_depth``) and the logits cropped back.
    """
    native = x.shape[-2:]
    if scale != 1:
        size = scaled_shape(int(native[0]), int(native[1]), scale)
        x = F.interpolate(x, size=size, mode="area")
    h, w = x.shape[-2:]
    ph, pw = math.ceil(h / multiple) * multiple - h, math.ceil(w / multiple) * multiple - w
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    logits = network(x)[..., :h, :w]
    if scale != 1:
        logits = F.interpolate(logits, size=native, mode="bilinear", align_corners=False)
    return logits
