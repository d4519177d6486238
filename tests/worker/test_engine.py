"""Engine scores against transformers' own BlipForImageTextRetrieval forward (same weights)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import BlipForImageTextRetrieval

from worker.attention import enable_sdpa
from worker.engine import Engine, EngineRequest, PairScore
from worker.model import LoadedModel, build_random_model, load_model
from worker.preprocess import prepare_pixels

TOLERANCE = 1e-5
TEXTS = (
    "a dog",
    "two cats sitting on a red couch next to the window",
    "a man riding a horse on the beach near the ocean",
    "pizza",
)


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    return load_model("random:tiny")


@pytest.fixture(scope="module")
def reference() -> BlipForImageTextRetrieval:
    """Return an unpatched instance with the same seeded weights as ``random:tiny``."""
    return build_random_model("tiny", seed=0)


@pytest.fixture(scope="module", params=[(True, False), (False, False), (True, True)],
                ids=["sdpa", "math", "sdpa-gather"])
def engine(request: pytest.FixtureRequest) -> Engine:
    """Both attention implementations; and the GPU's way (one gather) of giving each text its image's K/V."""
    use_sdpa, gather = request.param
    return Engine(load_model("random:tiny"), use_sdpa=use_sdpa, gather_cross_kv=gather)


def _pixels(loaded: LoadedModel, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8))
    return prepare_pixels(image, size=loaded.image_size, mean=loaded.image_mean, std=loaded.image_std)


@contextmanager
def _recorded(module: torch.nn.Module, size: Callable[[torch.Tensor], int] = lambda out: out.shape[0]) -> Iterator[list[int]]:
    """Record ``size(out)`` for each forward of ``module`` while the block runs."""
    sizes: list[int] = []
    handle = module.register_forward_hook(lambda m, a, out: sizes.append(size(out)))
    try:
        yield sizes
    finally:
        handle.remove()


def _reference_scores(model: BlipForImageTextRetrieval, loaded: LoadedModel, req: EngineRequest) -> list[PairScore]:
    """Score each pair alone, exactly as the model card does."""
    out = []
    with torch.inference_mode():
        for text in req.texts:
            enc = loaded.tokenizer(text, return_tensors="pt", return_token_type_ids=False)
            kwargs = dict(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=req.pixels[None])
            itm = model(**kwargs).itm_score.softmax(dim=-1)[0, 1].item()
            itc = model(**kwargs, use_itm_head=False).itm_score[0, 0].item()
            out.append(PairScore(itm, itc))
    return out


def _max_diff(engine: Engine, reference: BlipForImageTextRetrieval, loaded: LoadedModel, requests: list[EngineRequest]) -> float:
    got = engine.score(requests)
    assert [len(g) for g in got] == [len(r.texts) for r in requests]
    diff = 0.0
    for req, scores in zip(requests, got):
        for mine, ref in zip(scores, _reference_scores(reference, loaded, req)):
            diff = max(diff, abs(mine.match_probability - ref.match_probability))
            diff = max(diff, abs(mine.cosine_similarity - ref.cosine_similarity))
    return diff


CASES = {
    "one_text": lambda lm: [EngineRequest("a", _pixels(lm, 1), ("a dog on the beach",))],
    "one_image_many_texts": lambda lm: [EngineRequest("a", _pixels(lm, 1), TEXTS)],
    "distinct_images_one_text_each": lambda lm: [EngineRequest(k, _pixels(lm, i), (TEXTS[i],))
                                                 for i, k in enumerate("abcd")],
    "many_requests": lambda lm: [
        EngineRequest("a", _pixels(lm, 1), TEXTS[:2]),
        EngineRequest("b", _pixels(lm, 2), (TEXTS[2],)),
        EngineRequest("c", _pixels(lm, 3), TEXTS[1:]),
    ],
    "duplicate_keys": lambda lm: [
        EngineRequest("a", _pixels(lm, 1), (TEXTS[0],)),
        EngineRequest("b", _pixels(lm, 2), TEXTS[1:3]),
        EngineRequest("a", _pixels(lm, 1), (TEXTS[3], TEXTS[2])),
    ],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_parity_with_transformers_forward(engine: Engine, reference: BlipForImageTextRetrieval, loaded: LoadedModel, case: str) -> None:
    diff = _max_diff(engine, reference, loaded, CASES[case](loaded))
    print(f"engine[{'sdpa' if engine.use_sdpa else 'math'}, gather={engine.gather_cross_kv}] vs transformers, {case}: max abs diff {diff:.2e}")
    assert diff <= TOLERANCE


def test_duplicate_keys_run_the_vision_tower_once(loaded: LoadedModel) -> None:
    engine = Engine(load_model("random:tiny"))
    with _recorded(engine.model.vision_model.embeddings) as calls:
        engine.score(CASES["duplicate_keys"](loaded))
    assert sum(calls) == 2


def test_text_layers_run_once_per_call_for_both_scores(loaded: LoadedModel) -> None:
    # Given a call with four distinct images, one text each
    engine = Engine(load_model("random:tiny"))
    layer = engine.model.text_encoder.encoder.layer[0]
    with _recorded(layer.intermediate) as feed_forward, _recorded(layer.crossattention.self.key) as cross_keys:
        engine.score(CASES["distinct_images_one_text_each"](loaded))
    # Then each text layer's feed-forward ran once, over the ITC and the ITM pass of all four texts,
    # and its cross-attention keys were projected once, over the four images
    assert feed_forward == [8]
    assert cross_keys == [4]


@pytest.mark.parametrize("text_tokens", [1, 40])
def test_parity_when_the_text_pass_is_split_by_its_token_budget(reference: BlipForImageTextRetrieval,
                                                                loaded: LoadedModel, text_tokens: int) -> None:
    # Given a token budget that runs the texts one at a time (1) or a few at a time (40), so
    # chunks start and end inside an image's run of texts
    engine = Engine(load_model("random:tiny"), text_tokens=text_tokens)
    with _recorded(engine.model.text_encoder.encoder.layer[0].intermediate,
                   size=lambda out: out.shape[0] * out.shape[1]) as feed_forward:
        diff = _max_diff(engine, reference, loaded, CASES["many_requests"](loaded) + CASES["duplicate_keys"](loaded))
    # Then the text encoder ran in several passes, each within the budget unless one text alone exceeds it
    longest = max(len(ids) for ids in loaded.tokenizer(list(TEXTS))["input_ids"])
    assert len(feed_forward) > 1
    assert all(tokens <= max(text_tokens, 2 * longest) for tokens in feed_forward)
    # And every pair still matches transformers' forward
    assert diff <= TOLERANCE


def test_a_request_without_texts_gets_no_scores_and_no_vision_pass(loaded: LoadedModel) -> None:
    engine = Engine(load_model("random:tiny"))
    with _recorded(engine.model.vision_model.embeddings) as images:
        got = engine.score([EngineRequest("empty", _pixels(loaded, 5), ()),
                            EngineRequest("a", _pixels(loaded, 1), ("a dog",))])
    assert len(got[0]) == 0 and len(got[1]) == 1
    assert images == [1]


def test_results_keep_request_and_text_order(engine: Engine, reference: BlipForImageTextRetrieval,
                                             loaded: LoadedModel) -> None:
    requests = CASES["many_requests"](loaded)
    together = engine.score(requests)
    alone = [engine.score([r])[0] for r in requests]
    # One list per request, one score per text, so zip below cannot hide a missing or extra entry
    assert [len(x) for x in together] == [len(r.texts) for r in requests]
    assert [len(x) for x in alone] == [len(r.texts) for r in requests]
    for batched, single in zip(together, alone):
        for a, b in zip(batched, single):
            assert a.match_probability == pytest.approx(b.match_probability, abs=TOLERANCE)
            assert a.cosine_similarity == pytest.approx(b.cosine_similarity, abs=TOLERANCE)
    # And each request's batched scores are its own, in text order
    for r, batched in zip(requests, together):
        for a, ref in zip(batched, _reference_scores(reference, loaded, r)):
            assert a.match_probability == pytest.approx(ref.match_probability, abs=TOLERANCE)
            assert a.cosine_similarity == pytest.approx(ref.cosine_similarity, abs=TOLERANCE)


def test_sdpa_patch_matches_original_attention(reference: BlipForImageTextRetrieval, loaded: LoadedModel) -> None:
    patched = build_random_model("tiny", seed=0)
    assert enable_sdpa(patched) == 2 + 2 * 2  # vision layers + text self and cross per layer
    enc = loaded.tokenizer(list(TEXTS), padding="longest", return_tensors="pt", return_token_type_ids=False)
    pixels = torch.stack([_pixels(loaded, i) for i in range(len(TEXTS))])
    with torch.inference_mode():
        for use_itm_head in (True, False):
            kwargs = dict(**enc, pixel_values=pixels, use_itm_head=use_itm_head)
            want, got = reference(**kwargs), patched(**kwargs)
            for name in ("itm_score", "last_hidden_state"):
                diff = (getattr(want, name) - getattr(got, name)).abs().max().item()
                print(f"SDPA patch vs eager, use_itm_head={use_itm_head}, {name}: max abs diff {diff:.2e}")
                assert diff <= TOLERANCE
    # The patch is per instance: the class and the reference keep eager attention.
    assert "forward" not in vars(reference.vision_model.encoder.layers[0].self_attn)


def test_warmup_and_properties(loaded: LoadedModel) -> None:
    engine = Engine(loaded)
    with _recorded(engine.model.vision_model.embeddings) as images:
        engine.warmup()
    assert images == [1]  # warm-up ran one vision pass, over its one dummy image
    assert engine.image_size == 64 and len(engine.mean) == len(engine.std) == 3
    assert engine.score([]) == []


def test_bench_runs_and_formats(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from worker.bench import format_table, model_flops, run_engine_bench

    out = tmp_path / "bench.json"
    results = run_engine_bench("random:tiny", n_images=2, n_texts=3, naive_pairs=1, width=160, height=120,
                               repeats=1, matmul_seconds=0.05, out_json=str(out))
    rows = results["rows"]
    assert set(rows) == {"a_naive_per_pair", "a2_naive_model_card_itm_itc", "b_engine_distinct_images",
                         "c_engine_1_image_x_3_texts"}
    # The model card's snippet runs the vision tower twice per pair (ITM call, then ITC call)
    vision_gflop = model_flops(load_model("random:tiny").model.config, 1)["vision"] / 1e9
    extra = rows["a2_naive_model_card_itm_itc"]["gflop"] - rows["a_naive_per_pair"]["gflop"]
    assert vision_gflop < extra < 1.5 * vision_gflop
    assert out.exists() and "x card" in format_table(results)


@pytest.mark.parametrize("vision_chunk", [1, 2, 16])
def test_parity_whatever_the_image_chunk(reference: BlipForImageTextRetrieval, loaded: LoadedModel,
                                         vision_chunk: int) -> None:
    # Given a call whose images are split into forward passes of `vision_chunk` images (CPU: 1,
    # GPU: larger), with a key repeated later in the call
    engine = Engine(loaded, vision_chunk=vision_chunk)
    requests = CASES["duplicate_keys"](loaded) + CASES["many_requests"](loaded)
    # Then every pair still matches transformers' forward, in request order
    assert _max_diff(engine, reference, loaded, requests) <= TOLERANCE
