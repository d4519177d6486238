"""Load the BLIP image-text-matching model: from the hub, a local directory, or random weights."""

from __future__ import annotations

import os
import string
from dataclasses import dataclass
from typing import Any

import torch
from transformers import (
    AutoTokenizer,
    BertTokenizer,
    BlipConfig,
    BlipForImageTextRetrieval,
    BlipImageProcessorPil,
    BlipProcessor,
    PreTrainedTokenizerBase,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

RANDOM_PREFIX = "random:"
_LOCAL_PREFIXES = ("/", "./", "../", "~")
_WORDS = (
    "a an the of on in at to with and or is are was be by for from up down over under near "
    "into out off this that these those there here one two three four five some many few "
    "man woman men women person people boy girl child children baby player group crowd "
    "dog dogs cat cats horse horses cow cows sheep bird birds bear bears elephant elephants "
    "giraffe giraffes zebra zebras car cars bus buses truck trucks train trains bike bicycle "
    "motorcycle plane airplane boat boats street road sidewalk city building buildings house "
    "room kitchen bathroom bedroom table tables chair chairs bed couch window door wall floor "
    "field grass tree trees beach ocean water sea lake river snow sky cloud clouds sun mountain "
    "park plate food pizza sandwich cake banana bananas apple orange bowl cup glass bottle "
    "phone laptop computer tv book clock sign light umbrella kite frisbee ball bat racket "
    "skateboard surfboard skis board wave tennis baseball soccer game picture image photo "
    "sitting standing walking running riding playing eating holding looking flying lying "
    "parked driving swimming jumping surfing skiing waiting next front top side middle "
    "red blue green yellow white black brown gray orange pink large small big little old "
    "young tall long open full empty wooden other its his her their it he she they"
).split()


class ModelLoadError(Exception):
    """Raised when a model named by a hub id or directory cannot be loaded."""


@dataclass
class LoadedModel:
    """The warm model and what callers need to feed it."""

    model: BlipForImageTextRetrieval
    tokenizer: PreTrainedTokenizerBase
    name: str
    revision: str
    device: torch.device
    dtype: torch.dtype
    image_size: int
    random_weights: bool
    image_mean: tuple[float, float, float] = tuple(OPENAI_CLIP_MEAN)  # type: ignore[assignment]
    image_std: tuple[float, float, float] = tuple(OPENAI_CLIP_STD)  # type: ignore[assignment]
    quantized: bool = False


def blip_config(size: str) -> BlipConfig:
    """Return the config of ``random:<size>``: ``base`` is the hub's blip-itm-base-coco."""
    if size == "base":
        text: dict[str, Any] = dict(
            vocab_size=30524, hidden_size=768, encoder_hidden_size=768, intermediate_size=3072,
            num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=512,
            layer_norm_eps=1e-12, bos_token_id=30522, sep_token_id=102, pad_token_id=0,
            initializer_range=0.02,
        )
        vision: dict[str, Any] = dict(
            hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
            image_size=384, patch_size=16, layer_norm_eps=1e-5, initializer_range=0.02,
        )
    elif size == "tiny":
        vocab = build_vocab()
        text = dict(
            vocab_size=len(vocab), hidden_size=32, encoder_hidden_size=32, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=512,
            layer_norm_eps=1e-12, bos_token_id=vocab["[DEC]"], sep_token_id=vocab["[SEP]"],
            pad_token_id=0, initializer_range=0.02,
        )
        vision = dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            image_size=64, patch_size=16, layer_norm_eps=1e-5, initializer_range=0.02,
        )
    else:
        raise ValueError(f"unknown random model size {size!r}; expected 'tiny' or 'base'")
    return BlipConfig(
        text_config=text, vision_config=vision, image_text_hidden_size=256, projection_dim=512,
        initializer_range=0.02,
    )


def build_vocab(size: int | None = None) -> dict[str, int]:
    """Return a WordPiece vocab laid out like BERT's ([PAD] 0, [CLS] 101, [SEP] 102), [DEC] [ENC] last."""
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = string.ascii_lowercase + string.digits
    tokens += list(string.punctuation) + list(pieces) + ["##" + c for c in pieces]
    tokens += [w for w in dict.fromkeys(_WORDS) if w not in tokens]
    if size is not None:
        tokens += [f"[unused{i}]" for i in range(100, 100 + size - 2 - len(tokens))]
    tokens += ["[DEC]", "[ENC]"]
    return {token: i for i, token in enumerate(tokens)}


def build_tokenizer(vocab_size: int | None = None) -> PreTrainedTokenizerBase:
    """Build the offline stand-in for BLIP's lower-casing BERT tokenizer."""
    tokenizer = BertTokenizer(vocab=build_vocab(vocab_size), do_lower_case=True, model_max_length=512)
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    return tokenizer


def _init_weights(model: torch.nn.Module, seed: int, std: float = 0.02) -> None:
    # transformers' own init leaves the vision tower at std ~1e-10 (all images alike);
    # draw every weight from one seeded generator so scores depend on image and text.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            is_norm = isinstance(module, torch.nn.LayerNorm)
            for name, param in module.named_parameters(recurse=False):
                noise = std * torch.randn(param.shape, generator=gen)
                param.copy_(1.0 + noise if is_norm and name == "weight" else noise)


def build_random_model(size: str = "tiny", seed: int = 0) -> BlipForImageTextRetrieval:
    """Build a BlipForImageTextRetrieval with seeded random weights, in eval mode."""
    config = blip_config(size)
    model = BlipForImageTextRetrieval(config)
    # At width 32, std 0.02 makes every sublayer a ~10% nudge on the residual and the scores
    # barely move with the input; ~1/sqrt(width) keeps tiny's scores input-dependent.
    _init_weights(model, seed, std=0.02 if size == "base" else 0.15)
    return model.eval()


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    resolved = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(dtype)
    if resolved is None:
        raise ValueError(f"unknown dtype {dtype!r}; expected auto, float32, float16 or bfloat16")
    if device.type == "cpu" and resolved != torch.float32 and not (
        resolved == torch.bfloat16 and cpu_has_native_bf16()
    ):
        raise ValueError(f"dtype {dtype} is not supported on this CPU (half-precision matmuls are far slower "
                         "without native bfloat16 instructions); use float32")
    return resolved


def cpu_has_native_bf16() -> bool:
    """Return whether this CPU runs bfloat16 matmuls natively (AVX512-BF16 or AMX), per oneDNN."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _from_pretrained(spec: str, revision: str | None) -> tuple[Any, Any, BlipImageProcessorPil]:
    if spec.startswith(_LOCAL_PREFIXES) and not os.path.isdir(os.path.expanduser(spec)):
        raise ModelLoadError(f"model directory {spec!r} does not exist")
    path = os.path.expanduser(spec) if os.path.isdir(os.path.expanduser(spec)) else spec
    try:
        model = BlipForImageTextRetrieval.from_pretrained(path, revision=revision or "main")
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision or "main")
        processor = BlipImageProcessorPil.from_pretrained(path, revision=revision or "main")
    except Exception as exc:  # hub, network, file and format errors all mean "cannot load"
        raise ModelLoadError(f"cannot load model {spec!r} (revision {revision or 'default'}): {exc}") from exc
    return model, tokenizer, processor


def load_model(
    spec: str, *, device: str = "auto", dtype: str = "auto", revision: str | None = None, quantize: str = "none"
) -> LoadedModel:
    """Load the model named by a hub id, a local directory or ``random:tiny|base``."""
    dev = _resolve_device(device)
    torch_dtype = _resolve_dtype(dtype, dev)
    if quantize not in ("none", "int8"):
        raise ValueError(f"unknown quantize {quantize!r}; expected none or int8")
    if quantize == "int8" and (dev.type != "cpu" or torch_dtype != torch.float32):
        raise ValueError("int8 dynamic quantization runs on CPU in float32 only")
    if spec.startswith(RANDOM_PREFIX):
        size = spec[len(RANDOM_PREFIX):]
        model: Any = build_random_model(size)
        tokenizer = build_tokenizer(model.config.text_config.vocab_size if size == "base" else None)
        vc = model.config.vision_config
        image_size, mean, std = vc.image_size, tuple(OPENAI_CLIP_MEAN), tuple(OPENAI_CLIP_STD)
        name, rev, random_weights = spec, f"random-{size}-seed0", True
    else:
        model, tokenizer, proc = _from_pretrained(spec, revision)
        image_size = int(proc.size["height"])
        mean, std = tuple(proc.image_mean), tuple(proc.image_std)
        name, random_weights = spec, False
        rev = revision or getattr(model.config, "_commit_hash", None) or ("local" if os.path.isdir(spec) else "main")
    model = model.to(device=dev, dtype=torch_dtype).eval()
    if quantize == "int8":
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return LoadedModel(
        model=model, tokenizer=tokenizer, name=name, revision=str(rev), device=dev, dtype=torch_dtype,
        image_size=int(image_size), random_weights=random_weights, image_mean=mean,  # type: ignore[arg-type]
        image_std=std, quantized=quantize == "int8",  # type: ignore[arg-type]
    )


def save_model(spec: str, directory: str) -> None:
    """Write model, tokenizer and image processor config so ``load_model(directory)`` reads them."""
    loaded = load_model(spec, device="cpu", dtype="float32")
    size = loaded.image_size
    image_processor = BlipImageProcessorPil(
        size={"height": size, "width": size}, image_mean=list(loaded.image_mean), image_std=list(loaded.image_std)
    )
    os.makedirs(directory, exist_ok=True)
    loaded.model.save_pretrained(directory)
    BlipProcessor(image_processor=image_processor, tokenizer=loaded.tokenizer).save_pretrained(directory)
    image_processor.save_pretrained(directory)
