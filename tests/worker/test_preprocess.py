"""prepare_pixels against transformers' BlipImageProcessorPil."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from transformers import BlipImageProcessorPil
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from worker.preprocess import prepare_pixels


@pytest.mark.parametrize(("shape", "size"), [((300, 500), 384), ((48, 64), 64), ((384, 384), 384), ((1080, 1920), 384)])
def test_matches_blip_image_processor(shape: tuple[int, int], size: int) -> None:
    rng = np.random.default_rng(sum(shape))
    image = Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
    processor = BlipImageProcessorPil(size={"height": size, "width": size})

    expected = processor(images=image, return_tensors="pt")["pixel_values"][0]
    got = prepare_pixels(image, size=size, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD)

    diff = (expected - got).abs().max().item()
    print(f"prepare_pixels vs BlipImageProcessorPil {shape}->{size}: max abs diff {diff:.2e}")
    assert got.shape == (3, size, size) and got.dtype == expected.dtype
    assert diff < 1e-5


def test_converts_non_rgb() -> None:
    image = Image.new("L", (40, 30), 128)
    got = prepare_pixels(image, size=32, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD)
    expected = BlipImageProcessorPil(size={"height": 32, "width": 32})(images=image, return_tensors="pt")
    assert (got - expected["pixel_values"][0]).abs().max().item() < 1e-5
