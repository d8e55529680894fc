"""A LLaVA-OneVision checkpoint directory, checked before any model is instantiated.

    config.json: a JSON object, llava_onevision with SigLIP vision and Qwen2 text sub-configs
      whose sizes agree                                        (JSON only: no torch needed)
    weights: safetensors headers (pickle files are never opened), every file complete
    the model on the meta device: its size against the free memory, its parameter shapes
      against the headers                                      (torch + transformers)

A config without ``text_config`` would make transformers build a default-size text model; sizes
that disagree with the weights would fail deep inside ``from_pretrained`` after allocating the
model. Both are one line here. ``build --model`` and the transformers backend of ``run`` call
:func:`check_checkpoint` first.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from .errors import UserError

MODEL_TYPE = "llava_onevision"
VISION_TYPES = ("siglip_vision_model",)
TEXT_TYPES = ("qwen2",)
VISION_SIZES = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                "patch_size")
TEXT_SIZES = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
EXPECTED = ("expected a LLaVA-OneVision checkpoint directory written by save_pretrained (config.json, "
            "*.safetensors, tokenizer files)")


def read_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """``directory/config.json`` as a dict whose geometry :func:`check_config` accepts (no torch)."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise UserError(f"{directory}: no config.json there; {EXPECTED}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: not valid JSON ({error})") from None
    check_config(config, str(path))
    return config


def check_config(config: Any, source: str) -> None:
    """UserError naming ``source`` unless ``config`` describes a LLaVA-OneVision geometry that holds
    together: the sub-configs present and of the expected types, sizes positive integers, heads
    dividing widths, a patch within the image, the placeholder ids inside the vocabulary."""
    if not isinstance(config, dict):
        raise UserError(f"{source}: expected a JSON object, got {type(config).__name__}")
    if config.get("model_type") != MODEL_TYPE:
        raise UserError(f"{source}: model_type is {config.get('model_type')!r}, expected {MODEL_TYPE!r}")
    vision = _sub_config(config, "vision_config", VISION_TYPES, VISION_SIZES, source)
    text = _sub_config(config, "text_config", TEXT_TYPES, TEXT_SIZES, source)
    kv_heads = text.get("num_key_value_heads", text["num_attention_heads"])
    rules = [
        (vision["hidden_size"] % vision["num_attention_heads"] == 0,
         "vision_config.hidden_size must be a multiple of num_attention_heads"),
        (vision["patch_size"] <= vision["image_size"], "vision_config.patch_size must not exceed image_size"),
        (text["hidden_size"] % text["num_attention_heads"] == 0,
         "text_config.hidden_size must be a multiple of num_attention_heads"),
        (isinstance(kv_heads, int) and kv_heads >= 1 and text["num_attention_heads"] % kv_heads == 0,
         "text_config.num_attention_heads must be a multiple of num_key_value_heads"),
    ]
    for name in ("image_token_index", "video_token_index"):
        value = config.get(name)
        rules.append((type(value) is int and 0 <= value < text["vocab_size"],
                      f"{name} must be a token id below text_config.vocab_size ({text['vocab_size']})"))
    for ok, rule in rules:
        if not ok:
            raise UserError(f"{source}: {rule}; the sizes disagree ({_sizes(vision, text)})")


def _sub_config(config: dict, key: str, types: tuple[str, ...], sizes: tuple[str, ...], source: str) -> dict:
    value = config.get(key)
    if not isinstance(value, dict):
        raise UserError(f"{source}: '{key}' is {'missing' if value is None else 'not an object'}; transformers would "
                        f"fill in a default-size model; expected the checkpoint's {key} ({' or '.join(types)})")
    if value.get("model_type") not in types:
        raise UserError(f"{source}: {key}.model_type is {value.get('model_type')!r}, expected {' or '.join(types)}")
    for name in sizes:
        if type(value.get(name)) is not int or value[name] < 1:
            raise UserError(f"{source}: {key}.{name} is {value.get(name)!r}, expected an integer >= 1")
    return value


def _sizes(vision: dict, text: dict) -> str:
    return ", ".join([f"vision {name} {vision[name]}" for name in ("hidden_size", "num_attention_heads", "image_size",
                                                                   "patch_size")] +
                     [f"text {name} {text[name]}" for name in ("hidden_size", "num_attention_heads", "vocab_size")])


def weight_shapes(directory: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every floating-point tensor in the directory's ``*.safetensors``, from their
    headers only (integer tensors are index buffers such as old ``position_ids``, not weights).

    UserError when there are none (pickle weights are refused, never opened) or a file is
    truncated or not safetensors.
    """
    from safetensors import SafetensorError, safe_open

    directory = Path(directory)
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise UserError(f"{directory / pickles[0]}: pickle weights are not loaded (unpickling can run code); "
                            "convert the checkpoint to safetensors (save_pretrained(..., safe_serialization=True)) "
                            "where you trust it")
        raise UserError(f"{directory}: no *.safetensors weights; {EXPECTED}")
    shapes = {}
    for path in files:
        try:
            with safe_open(path, framework="numpy") as handle:
                slices = {name: handle.get_slice(name) for name in handle.keys()}
                shapes.update({name: tuple(tensor.get_shape()) for name, tensor in slices.items()
                               if tensor.get_dtype().startswith(("F", "BF"))})
        except (SafetensorError, OSError) as error:
            raise UserError(f"{path}: not a complete safetensors file ({error}); copy the checkpoint again") from None
    return shapes


def check_checkpoint(directory: str | os.PathLike[str], dtype=None, device: str = "cpu") -> dict[str, Any]:
    """Every check, before ``from_pretrained``; returns the config.

    dtype: the torch dtype the model will be loaded in (default float32), for its size; device:
    where it will live ("cpu": the host's available memory; "cuda[:N]": that GPU's free memory).
    """
    import torch

    config = read_config(directory)
    stored = weight_shapes(directory)
    model = _meta_model(config, str(Path(directory) / "config.json"))
    dtype = dtype or torch.float32
    parameters = dict(model.named_parameters())
    size = sum(p.numel() for p in parameters.values()) * dtype.itemsize
    _check_memory(Path(directory), size, dtype, device)
    embeddings = model.get_input_embeddings().weight
    tied = model.get_output_embeddings().weight is embeddings
    _check_shapes(Path(directory), {name: tuple(p.shape) for name, p in parameters.items()}, stored,
                  tuple(embeddings.shape) if tied else None)
    return config


def _meta_model(config: dict, source: str):
    import torch
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    try:
        parsed = LlavaOnevisionConfig.from_dict(config)
    except Exception as error:  # transformers' (and huggingface_hub's) own validation of the config
        raise UserError(f"{source}: transformers rejects it: {str(error).strip().splitlines()[-1].strip()}") from None
    with torch.device("meta"):
        return LlavaOnevisionForConditionalGeneration(parsed)


def _check_memory(directory: Path, size: int, dtype, device: str) -> None:
    """UserError when the model does not fit the memory of ``device`` (host memory for the CPU)."""
    if device.startswith("cuda"):
        import torch

        where, available = f"free memory of {device}", torch.cuda.mem_get_info(torch.device(device))[0]
    else:
        where, available = "memory available here", _available_host_memory()
    if available is not None and size > available:
        dtype_name = str(dtype).removeprefix("torch.")
        raise UserError(f"{directory}: the model needs {size / 2**30:.1f} GiB in {dtype_name}, more than the "
                        f"{available / 2**30:.1f} GiB of {where}")


def _available_host_memory() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else None (not checked)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            fields = dict(line.split(":", 1) for line in handle)
    except OSError:
        return None
    return int(fields["MemAvailable"].split()[0]) * 1024 if "MemAvailable" in fields else None


def _check_shapes(directory: Path, needed: dict[str, tuple[int, ...]], stored: dict[str, tuple[int, ...]],
                  tied_shape: tuple[int, ...] | None) -> None:
    """The weights must hold exactly the tensor shapes config.json describes (names aside: checkpoints
    of older transformers versions name them differently); a tied output embedding may be stored."""
    missing = Counter(needed.values()) - Counter(stored.values())
    extra = Counter(stored.values()) - Counter(needed.values())
    if tied_shape is not None:
        extra -= Counter({tied_shape: 1})
    if missing or extra:
        shape, count = next(iter((missing or extra).items()))
        names = needed if missing else stored
        example = next(name for name, value in names.items() if value == shape)
        side = ("config.json describes" if missing else "the weights hold") + f" {count} more tensor(s) of shape "
        raise UserError(f"{directory}: config.json and the weights disagree: {side}{list(shape)} (e.g. {example}); "
                        "expected the config.json saved with these weights")
