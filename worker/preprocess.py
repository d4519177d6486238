"""Turn a decoded RGB image into the model's pixel tensor, as BlipImageProcessorPil does."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image


def prepare_pixels(
    image: Image.Image,
    *,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    resample: int = Image.Resampling.BICUBIC,
) -> torch.Tensor:
    """Resize to ``size``x``size`` (aspect ignored), rescale by 1/255 and normalize; return [3, size, size] float32."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    resized = image.resize((size, size), resample=resample)
    pixels = np.asarray(resized, dtype=np.float32)  # H, W, C
    # (x / 255 - mean) / std folded into one multiply-add per channel.
    std_arr = np.asarray(std, dtype=np.float32)
    scale = 1.0 / (255.0 * std_arr)
    offset = -np.asarray(mean, dtype=np.float32) / std_arr
    pixels = pixels * scale + offset
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
