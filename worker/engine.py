"""Score (image, text) pairs: ITM match probability and ITC cosine, one vision pass per image.

Matches ``BlipForImageTextRetrieval.forward`` (``use_itm_head`` True and False) pair by pair,
but runs the vision tower once per distinct image, and runs the texts of a whole call as one
batch through the text encoder: the ITC pass and the ITM pass go through each layer's shared
self-attention and feed-forward weights together, and each layer's cross-attention keys and
values are projected once per image and shared across that image's texts. With short texts
those text layers are bound by reading their weights, so one read per layer per call, rather
than two per image, is what makes many distinct images cheaper.
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

    def __init__(self, loaded: LoadedModel, *, use_sdpa: bool = True, vision_chunk: int | None = None,
                 gather_cross_kv: bool | None = None, text_tokens: int = 16384) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.use_sdpa = use_sdpa
        # On CPU, batching images through the vision tower lowered throughput; on GPU it pays.
        self.vision_chunk = vision_chunk or (1 if loaded.device.type == "cpu" else 16)
        # Texts of several images attend to their own image's keys/values: on a GPU one gather
        # (a copy per text) is cheapest; on a CPU that copy costs more than one attention call
        # per image over an expanded (uncopied) view.
        self.gather_cross_kv = loaded.device.type != "cpu" if gather_cross_kv is None else gather_cross_kv
        # At most this many padded tokens (ITC and ITM passes counted) go through the text
        # encoder at once, which bounds its activations (about 12 KiB per token in float32 at
        # base size) when a batch gathers many long texts; short captions fit in one pass.
        self.text_tokens = text_tokens
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
        image_index: dict[str, int] = {}
        pixels: list[torch.Tensor] = []
        pair_image: list[int] = []
        texts: list[str] = []
        for request in requests:
            if not request.texts:
                continue
            if request.image_key not in image_index:
                image_index[request.image_key] = len(pixels)
                pixels.append(request.pixels)
            pair_image.extend([image_index[request.image_key]] * len(request.texts))
            texts.extend(request.texts)
        itm_list = [0.0] * len(texts)
        cos_list = [0.0] * len(texts)
        if texts:
            # Group the texts by image (a key repeated later in the call joins its first use),
            # score them in one pass, and put the scores back in request order.
            order = sorted(range(len(texts)), key=lambda k: pair_image[k])
            with torch.inference_mode():
                itm, cos = self._score_pairs(pixels, [pair_image[k] for k in order], [texts[k] for k in order])
            for k, p, c in zip(order, itm.tolist(), cos.tolist()):
                itm_list[k], cos_list[k] = p, c
        out: list[list[PairScore]] = []
        start = 0
        for request in requests:
            end = start + len(request.texts)
            out.append([PairScore(p, c) for p, c in zip(itm_list[start:end], cos_list[start:end])])
            start = end
        return out

    def _score_pairs(
        self, pixels: list[torch.Tensor], pair_image: list[int], texts: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Score texts sorted by image (``pair_image`` is non-decreasing and covers every image)."""
        device, dtype = self.loaded.device, self.loaded.dtype
        image_embeds = self._encode_images(pixels)
        tokenizer = self.loaded.tokenizer
        tokens = tokenizer(texts, truncation=True, max_length=self.max_length, return_token_type_ids=False)
        index = torch.tensor(pair_image, device=device)
        model = self.model
        text_parts, fused_parts = [], []
        for start, end in self._text_chunks([len(ids) for ids in tokens["input_ids"]]):
            enc = tokenizer.pad({name: ids[start:end] for name, ids in tokens.items()}, padding="longest",
                                return_tensors="pt")
            first = pair_image[start]
            text_cls, fused_cls = self._encode_texts(
                enc["input_ids"].to(device), self._additive_mask(enc["attention_mask"].to(device), dtype),
                image_embeds[first:pair_image[end - 1] + 1], index[start:end] - first,
            )
            text_parts.append(text_cls)
            fused_parts.append(fused_cls)
        text_cls, fused_cls = torch.cat(text_parts), torch.cat(fused_parts)
        # ITC: CLS projections, cosine per pair (never the batch x batch matrix).
        image_feat = F.normalize(model.vision_proj(image_embeds[:, 0, :]), dim=-1)
        text_feat = F.normalize(model.text_proj(text_cls), dim=-1)
        cosine = (image_feat.index_select(0, index) * text_feat).sum(-1)
        # ITM: the CLS of the text encoded with cross-attention to its image's tokens.
        probability = model.itm_head(fused_cls).float().softmax(dim=-1)[:, 1]
        return probability.cpu(), cosine.float().cpu()

    def _text_chunks(self, lengths: list[int]) -> list[tuple[int, int]]:
        """Split texts (in order) into runs whose padded ITC+ITM tokens stay within ``text_tokens``."""
        chunks, start, longest = [], 0, 0
        for end, length in enumerate(lengths):
            longest = max(longest, length)
            if end > start and 2 * (end + 1 - start) * longest > self.text_tokens:
                chunks.append((start, end))
                start, longest = end, length
        chunks.append((start, len(lengths)))
        return chunks

    def _encode_images(self, pixels: list[torch.Tensor]) -> torch.Tensor:
        """Run the vision tower over ``vision_chunk`` images at a time; return [images, tokens, width]."""
        vision = self.model.vision_model
        device, dtype = self.loaded.device, self.loaded.dtype
        chunks = []
        for start in range(0, len(pixels), self.vision_chunk):
            batch = torch.stack(pixels[start:start + self.vision_chunk]).to(device=device, dtype=dtype)
            hidden = vision.encoder(inputs_embeds=vision.embeddings(batch)).last_hidden_state
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

    def _cross_attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, index: torch.Tensor,
                      sizes: list[int]) -> torch.Tensor:
        """Attend each text's query ([texts, heads, len, dim]) to its image's keys/values ([images, ...]).

        ``index`` gives each text's image; ``sizes`` (CPU only) how many texts each image has.
        """
        texts, images = query.shape[0], key.shape[0]
        if images == texts:  # one text per image, in image order
            return self._attend(query, key, value, None)
        if images == 1:
            return self._attend(query, key.expand(texts, -1, -1, -1), value.expand(texts, -1, -1, -1), None)
        if self.gather_cross_kv:
            return self._attend(query, key.index_select(0, index), value.index_select(0, index), None)
        return torch.cat([
            self._attend(part, key[i:i + 1].expand(len(part), -1, -1, -1), value[i:i + 1].expand(len(part), -1, -1, -1),
                         None)
            for i, part in enumerate(query.split(sizes))
        ])

    def _encode_texts(
        self, input_ids: torch.Tensor, mask: torch.Tensor | None, image_embeds: torch.Tensor, index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the CLS of each text encoded alone (ITC) and with its image (ITM).

        Both passes start from the same embeddings and share every layer's self-attention and
        feed-forward weights, so they run as one batch of 2 x texts; only the ITM half goes
        through cross-attention, whose keys/values are projected once per image per layer.
        """
        encoder = self.model.text_encoder
        texts = input_ids.shape[0]
        hidden = encoder.embeddings(input_ids=input_ids)
        hidden = torch.cat([hidden, hidden])
        both_mask = None if mask is None else torch.cat([mask, mask])
        sizes = [] if self.gather_cross_kv else index.bincount(minlength=image_embeds.shape[0]).tolist()
        for layer in encoder.encoder.layer:
            attn = layer.attention
            q, k, v = (self._heads(proj(hidden)) for proj in (attn.self.query, attn.self.key, attn.self.value))
            hidden = attn.output(self._attend(q, k, v, both_mask), hidden)
            cross = layer.crossattention
            fused = hidden[texts:]
            key, value = self._heads(cross.self.key(image_embeds)), self._heads(cross.self.value(image_embeds))
            context = self._cross_attend(self._heads(cross.self.query(fused)), key, value, index, sizes)
            hidden = torch.cat([hidden[:texts], cross.output(context, fused)])
            hidden = layer.output(layer.intermediate(hidden), hidden)
        return hidden[:texts, 0, :], hidden[texts:, 0, :]
