"""The LLM backends, by name: :data:`LLM_BACKENDS` is the one table that :func:`make_llm` and the
``--llm`` option read. A factory imports its backend when called, so this package imports with the
standard library alone (no torch, no TensorRT-LLM).
"""
from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    from ..manifest import Manifest
    from .base import LLMBackend

LLMFactory = Callable[[Path, "Manifest", "str | Path | None"], "LLMBackend"]
"""(artifact directory, its manifest, ``model_dir`` or None) -> the backend."""


def _transformers(directory: Path, manifest: Manifest, model_dir: str | Path | None) -> LLMBackend:
    """LLaVA-OneVision under transformers, from ``model_dir`` (default: the model the artifacts were built from)."""
    check_llm("transformers", model_dir)
    from ..trust import model_directory
    from .hf import TransformersBackend

    return TransformersBackend(Path(model_dir) if model_dir is not None else model_directory(directory, manifest))


def _trtllm_engine(directory: Path, manifest: Manifest, model_dir: str | Path | None) -> LLMBackend:
    """A TensorRT-LLM engine directory (``model_dir``), prompted through a prompt table."""
    check_llm("trtllm-engine", model_dir)
    from .trtllm_engine import TrtLlmEngineBackend

    return TrtLlmEngineBackend(model_dir, tokenizer_dir=directory / "tokenizer")


def _trtllm_api(directory: Path, manifest: Manifest, model_dir: str | Path | None) -> LLMBackend:
    """A model directory (``model_dir``) under the TensorRT-LLM LLM API."""
    check_llm("trtllm-api", model_dir)
    from .trtllm_llmapi import TrtLlmApiBackend

    return TrtLlmApiBackend(model_dir)


TORCH_INSTALL = ("pip install 'torch==2.13.0+cpu' --extra-index-url https://download.pytorch.org/whl/cpu "
                 "(a CUDA machine: pip install torch==2.13.0; Jetson: README's Install)")
"""The command that installs torch alone, all that the transformers LLM needs beyond the deploy install."""


def check_llm(name: str, model_dir: str | Path | None) -> None:
    """What backend ``name`` needs before anything loads (UserError, one line, otherwise): transformers
    needs torch; the TensorRT-LLM backends need TensorRT-LLM and ``model_dir``; a ``model_dir`` given
    must exist."""
    if name == "transformers":
        if importlib.util.find_spec("torch") is None:
            raise UserError(f"--llm transformers needs torch, which this install lacks: {TORCH_INSTALL}")
    elif model_dir is None:
        raise UserError(f"--llm {name} needs --model DIR (the TensorRT-LLM engine or model directory)")
    elif importlib.util.find_spec("tensorrt_llm") is None:
        raise UserError(f"--llm {name}: TensorRT-LLM is not installed (pip install 'mmg-export[trtllm]' on x86, "
                        "the 0.12-jetson branch on JetPack 6); or use --llm transformers")
    if model_dir is not None and not Path(model_dir).is_dir():
        raise UserError(f"--model {model_dir}: no such directory; expected the checkpoint, engine or model directory "
                        f"that --llm {name} loads")


LLM_BACKENDS: dict[str, LLMFactory] = {
    "transformers": _transformers,
    "trtllm-engine": _trtllm_engine,
    "trtllm-api": _trtllm_api,
}


def make_llm(name: str, directory: Path, manifest: Manifest, model_dir: str | Path | None) -> LLMBackend:
    """The LLM backend ``name`` (see :data:`LLM_BACKENDS`) over ``model_dir``."""
    if name not in LLM_BACKENDS:
        raise UserError(f"llm={name!r}: expected one of {', '.join(LLM_BACKENDS)} or an LLMBackend instance")
    return LLM_BACKENDS[name](directory, manifest, model_dir)
