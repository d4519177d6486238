"""Score (image, text) pairs: ITM match probability and ITC cosine, one vision pass per image.

Matches ``BlipForImageTextRetrieval.forward`` (``use_itm_head`` True and False) pair by pair,
but runs the vision tower once per distinct image, projects each image's cross-attention
keys and values once per layer and shares them across that image's texts, and runs all
texts of a call as one padded batch for ITC and one for ITM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from worker.attention import enable_sdpa
from worker.model import LoadedModel
from worker.preprocess import prepare_pixels

CrossKV = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class EngineRequest:
    """One image (already preprocessed) and the texts to score against it."""

    image_key: str
    pixels: torch.Tensor  # [3, H, W] float32 from prepare_pixels
    texts: tuple[str, ...]


@dataclass(frozen=True)
class PairScore:
    """The scores of one (image, text) pair."""

    match_probability: float
    cosine_similarity: float


class Engine:
    """Run the warm model over batches of requests."""

    def __init__(self, loaded: LoadedModel, *, use_sdpa: bool = True, vision_chunk: int | None = None) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.use_sdpa = use_sdpa
        # On CPU, batching images through the vision tower lowered throughput; on GPU it pays.
        self.vision_chunk = vision_chunk or (1 if loaded.device.type == "cpu" else 16)
        if use_sdpa:
            enable_sdpa(self.model)
        text_config: Any = self.model.config.text_config
        self.num_heads = int(text_config.num_attention_heads)
        self.max_length = min(int(text_config.max_position_embeddings), int(loaded.tokenizer.model_max_length))

    @property
    def image_size(self) -> int:
        """Return the side of the square input image."""
        return self.loaded.image_size

    @property
    def mean(self) -> tuple[float, ...]:
        """Return the per-channel normalisation mean."""
        return tuple(self.loaded.image_mean)

    @property
    def std(self) -> tuple[float, ...]:
        """Return the per-channel normalisation std."""
        return tuple(self.loaded.image_std)

    def warmup(self) -> None:
        """Run one forward on a dummy image and text."""
        image = Image.new("RGB", (self.image_size, self.image_size), (127, 127, 127))
        pixels = prepare_pixels(image, size=self.image_size, mean=self.mean, std=self.std)
        self.score([EngineRequest("warmup", pixels, ("a warm-up caption",))])

    def score(self, requests: Sequence[EngineRequest]) -> list[list[PairScore]]:
        """Return one list of PairScore per request, one per text, in order."""
        if not requests:
            return []
        image_index: dict[str, int] = {}
        pixels: list[torch.Tensor] = []
        pair_image: list[int] = []
        texts: list[str] = []
        for request in requests:
            if request.image_key not in image_index:
                image_index[request.image_key] = len(pixels)
                pixels.append(request.pixels)
            pair_image.extend([image_index[request.image_key]] * len(request.texts))
            texts.extend(request.texts)
        if not texts:
            return [[] for _ in requests]
        # Group the pairs by image (a key repeated later in the call joins its first use), run
        # whole forward passes over at most ``vision_chunk`` distinct images at a time, and put
        # the scores back in request order. On a CPU (chunk 1) each image's tokens and
        # cross-attention keys/values stay small and hot in cache; on a GPU the batch fills it.
        order = sorted(range(len(texts)), key=lambda k: pair_image[k])
        sorted_images = [pair_image[k] for k in order]
        itm_list = [0.0] * len(texts)
        cos_list = [0.0] * len(texts)
        with torch.inference_mode():
            start = 0
            for first in range(0, len(pixels), self.vision_chunk):
                last = min(first + self.vision_chunk, len(pixels))
                end = start
                while end < len(order) and sorted_images[end] < last:
                    end += 1
                picked = order[start:end]
                itm, cos = self._score_pairs(torch.stack(pixels[first:last]), [pair_image[k] - first for k in picked],
                                             [texts[k] for k in picked])
                for k, p, c in zip(picked, itm.tolist(), cos.tolist()):
                    itm_list[k], cos_list[k] = p, c
                start = end
        out: list[list[PairScore]] = []
        start = 0
        for request in requests:
            end = start + len(request.texts)
            out.append([PairScore(p, c) for p, c in zip(itm_list[start:end], cos_list[start:end])])
            start = end
        return out

    def _score_pairs(
        self, pixels: torch.Tensor, pair_image: list[int], texts: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        device, dtype = self.loaded.device, self.loaded.dtype
        image_embeds = self._encode_images(pixels.to(device=device, dtype=dtype))
        enc = self.loaded.tokenizer(
            texts, padding="longest", truncation=True, max_length=self.max_length,
            return_token_type_ids=False, return_tensors="pt",
        )
        input_ids = enc["input_ids"].to(device)
        mask = self._additive_mask(enc["attention_mask"].to(device), dtype)
        index = torch.tensor(pair_image, device=device)
        model = self.model
        # ITC: unimodal text, CLS projections, cosine per pair (never the batch x batch matrix).
        text_cls = self._encode_text(input_ids, mask, None, index)[:, 0, :]
        image_feat = F.normalize(model.vision_proj(image_embeds[:, 0, :]), dim=-1)
        text_feat = F.normalize(model.text_proj(text_cls), dim=-1)
        cosine = (image_feat.index_select(0, index) * text_feat).sum(-1)
        # ITM: text with cross-attention to its image's tokens.
        cross_kv = self._cross_kv(image_embeds)
        fused_cls = self._encode_text(input_ids, mask, cross_kv, index)[:, 0, :]
        probability = model.itm_head(fused_cls).float().softmax(dim=-1)[:, 1]
        return probability.cpu(), cosine.float().cpu()

    def _encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        vision = self.model.vision_model
        chunks = []
        for start in range(0, pixels.shape[0], self.vision_chunk):
            hidden = vision.embeddings(pixels[start:start + self.vision_chunk])
            hidden = vision.encoder(inputs_embeds=hidden).last_hidden_state
            chunks.append(vision.post_layernorm(hidden))
        return torch.cat(chunks) if len(chunks) > 1 else chunks[0]

    @staticmethod
    def _additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
        # BlipTextModel: 0 where attended, finfo.min on padding; None when nothing is padded.
        if bool(attention_mask.all()):
            return None
        blocked = (attention_mask == 0)[:, None, None, :]
        return torch.zeros(blocked.shape, dtype=dtype, device=blocked.device).masked_fill(
            blocked, torch.finfo(dtype).min
        )

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], self.num_heads, -1).transpose(1, 2)

    def _cross_kv(self, image_embeds: torch.Tensor) -> CrossKV:
        kv = []
        for layer in self.model.text_encoder.encoder.layer:
            attn = layer.crossattention.self
            kv.append((self._heads(attn.key(image_embeds)), self._heads(attn.value(image_embeds))))
        return kv

    def _attend(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        scale = query.shape[-1] ** -0.5
        if self.use_sdpa:
            context = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scale)
        else:
            scores = torch.matmul(query, key.transpose(-1, -2)) * scale
            if mask is not None:
                scores = scores + mask
            context = torch.matmul(scores.softmax(dim=-1), value)
        return context.transpose(1, 2).flatten(2)

    def _encode_text(
        self, input_ids: torch.Tensor, mask: torch.Tensor | None, cross_kv: CrossKV | None, index: torch.Tensor
    ) -> torch.Tensor:
        encoder = self.model.text_encoder
        hidden = encoder.embeddings(input_ids=input_ids)
        shared = cross_kv is not None and int(index.max()) == 0  # one image: expand, no copy
        for i, layer in enumerate(encoder.encoder.layer):
            attn = layer.attention
            q, k, v = (self._heads(proj(hidden)) for proj in (attn.self.query, attn.self.key, attn.self.value))
            hidden = attn.output(self._attend(q, k, v, mask), hidden)
            if cross_kv is not None:
                key, value = cross_kv[i]
                if shared:
                    key, value = key.expand(hidden.shape[0], -1, -1, -1), value.expand(hidden.shape[0], -1, -1, -1)
                else:
                    key, value = key.index_select(0, index), value.index_select(0, index)
                cross = layer.crossattention
                hidden = cross.output(self._attend(self._heads(cross.self.query(hidden)), key, value, None), hidden)
            hidden = layer.output(layer.intermediate(hidden), hidden)
        return hidden
