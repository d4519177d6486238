"""Model loading: random weights, the base config, save/load round trip, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from worker.engine import Engine, EngineRequest
from worker.model import ModelLoadError, blip_config, build_random_model, load_model, save_model
from worker.preprocess import prepare_pixels


def _request(loaded, key: str, seed: int, texts: tuple[str, ...]) -> EngineRequest:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    pixels = prepare_pixels(image, size=loaded.image_size, mean=loaded.image_mean, std=loaded.image_std)
    return EngineRequest(key, pixels, texts)


def test_random_tiny_loads_on_cpu() -> None:
    loaded = load_model("random:tiny", device="cpu")
    assert loaded.random_weights and loaded.revision == "random-tiny-seed0"
    assert loaded.dtype == torch.float32 and loaded.device.type == "cpu"
    assert not loaded.model.training
    ids = loaded.tokenizer(["A dog on the beach"])["input_ids"][0]
    assert ids[0] == loaded.tokenizer.cls_token_id == 101 and ids[-1] == 102
    assert loaded.tokenizer.pad_token_id == 0


def test_random_weights_are_seeded() -> None:
    a, b, c = build_random_model("tiny", seed=0), build_random_model("tiny", seed=0), build_random_model("tiny", seed=1)
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.vision_proj.weight, c.vision_proj.weight)
    # transformers' own init leaves the vision tower near zero; ours must not.
    assert a.vision_model.encoder.layers[0].self_attn.qkv.weight.std() > 0.01


def test_base_config_matches_hub_architecture() -> None:
    config = blip_config("base")
    text, vision = config.text_config, config.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.intermediate_size) == (768, 12, 12, 3072)
    assert (text.vocab_size, text.max_position_embeddings, text.encoder_hidden_size) == (30524, 512, 768)
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads) == (768, 12, 12)
    assert (vision.image_size, vision.patch_size, vision.intermediate_size) == (384, 16, 3072)
    assert config.image_text_hidden_size == 256
    with torch.device("meta"):
        from transformers import BlipForImageTextRetrieval

        model = BlipForImageTextRetrieval(config)
    params = sum(p.numel() for p in model.parameters())
    print(f"random:base parameters: {params / 1e6:.1f}M")
    assert 223e6 < params < 225e6


def test_scores_depend_on_image_and_text() -> None:
    loaded = load_model("random:tiny")
    engine = Engine(loaded)
    texts = ("a dog on the beach", "two red buses parked on a city street")
    first, second = engine.score([_request(loaded, "a", 1, texts), _request(loaded, "b", 2, texts)])
    # Given one image, two texts; and one text, two images: all clearly different.
    assert abs(first[0].match_probability - first[1].match_probability) > 1e-3
    assert abs(first[0].cosine_similarity - first[1].cosine_similarity) > 1e-3
    assert abs(first[0].match_probability - second[0].match_probability) > 1e-3
    assert abs(first[0].cosine_similarity - second[0].cosine_similarity) > 1e-3


def test_save_then_load_from_directory_gives_same_scores(tmp_path: Path) -> None:
    save_model("random:tiny", str(tmp_path))
    original, reloaded = load_model("random:tiny"), load_model(str(tmp_path))
    assert not reloaded.random_weights and reloaded.image_size == original.image_size
    assert reloaded.image_mean == pytest.approx(original.image_mean)
    request = _request(original, "a", 3, ("a cat on a couch", "pizza"))
    assert Engine(original).score([request]) == Engine(reloaded).score([request])


@pytest.mark.parametrize("spec", ["/nonexistent/model-dir", "./no-such-dir"])
def test_missing_directory_raises_model_load_error(spec: str) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(spec)


def test_unloadable_directory_raises_model_load_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot load model"):
        load_model(str(tmp_path))


def test_float16_refused_on_cpu() -> None:
    with pytest.raises(ValueError, match="not supported on this CPU"):
        load_model("random:tiny", device="cpu", dtype="float16")


def test_bfloat16_on_cpu_only_with_native_instructions(monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.model as model_module

    # Given a CPU without native bfloat16, the opt-in is refused
    monkeypatch.setattr(model_module, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(ValueError, match="not supported on this CPU"):
        load_model("random:tiny", device="cpu", dtype="bfloat16")
    # And with it, the model runs in bfloat16 and stays close to float32
    monkeypatch.setattr(model_module, "cpu_has_native_bf16", lambda: True)
    reference = load_model("random:tiny", device="cpu")
    half = load_model("random:tiny", device="cpu", dtype="bfloat16")
    assert half.dtype == torch.bfloat16 and next(half.model.parameters()).dtype == torch.bfloat16
    [want], [got] = (Engine(m).score([_request(m, "a", 4, ("a dog on the beach",))]) for m in (reference, half))
    assert abs(want[0].match_probability - got[0].match_probability) < 0.05


def test_int8_quantized_model_stays_close() -> None:
    request = _request(load_model("random:tiny"), "a", 4, ("a dog on the beach", "a man riding a horse"))
    exact = Engine(load_model("random:tiny")).score([request])[0]
    quantized = Engine(load_model("random:tiny", quantize="int8")).score([request])[0]
    diff = max(
        max(abs(a.match_probability - b.match_probability), abs(a.cosine_similarity - b.cosine_similarity))
        for a, b in zip(exact, quantized)
    )
    print(f"int8 dynamic quantization vs float32 (random:tiny): max abs diff {diff:.2e}")
    assert diff < 0.1
