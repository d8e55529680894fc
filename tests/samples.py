"""Small files the tests write: a manifest over stand-in component files, PNG and JPEG pictures."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import av
import numpy as np

from mmg_runtime.manifest import Component, Manifest, TensorSpec, sha256_file


def write_png(path: Path, picture: np.ndarray) -> None:
    """Write one (H, W, 3) RGB, (H, W, 4) RGBA or (H, W) gray uint8 image as PNG with PyAV."""
    pix_fmt = {2: "gray", 3: "rgb24", 4: "rgba"}[picture.shape[2] if picture.ndim == 3 else 2]
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = picture.shape[1], picture.shape[0], pix_fmt
        for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format=pix_fmt)):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_jpeg(path: Path, picture: np.ndarray) -> Path:
    """Write one (H, W, 3) RGB uint8 image as a baseline JPEG with PyAV."""
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("mjpeg", rate=1)
        stream.width, stream.height, stream.pix_fmt = picture.shape[1], picture.shape[0], "yuvj420p"
        for packet in [*stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")), *stream.encode()]:
            container.mux(packet)
    return path


def make_manifest(directory: Path, backend: str = "tensorrt", *, frames: int = 32, tokens: int = 196,
                  hidden: int = 1152, keep: int = 1568, ratio: float = 0.25, image_size: int = 384,
                  **changes: object) -> Manifest:
    """A manifest for small component files written into ``directory`` (fp16; by default 32 x 196 x 1152,
    K = 1568, 384 x 384 pixels), its tensor shapes following the geometry given."""
    (directory / "encoder.engine").write_bytes(b"encoder plan")
    (directory / "pruner.engine").write_bytes(b"pruner plan")
    (directory / "newline.npy").write_bytes(b"newline row")
    pixels = TensorSpec(shape=(frames, 3, image_size, image_size), dtype="float16")
    video_tokens = TensorSpec(shape=(frames, tokens, hidden), dtype="float16")
    manifest = Manifest(
        tool_version="0.1.0",
        backend=backend,
        target="orin-agx",
        precision="fp16",
        frames=frames,
        tokens_per_frame=tokens,
        hidden_size=hidden,
        ratio=ratio,
        keep=keep,
        components={
            "encoder": Component("encoder.engine", sha256_file(directory / "encoder.engine"),
                                 {"pixel_values": pixels}, {"video_tokens": video_tokens}),
            "pruner": Component("pruner.engine", sha256_file(directory / "pruner.engine"),
                                {"video_tokens": video_tokens},
                                {"kept_tokens": TensorSpec(shape=(keep, hidden), dtype="float16"),
                                 "kept_indices": TensorSpec(shape=(keep,), dtype="int64")}),
            "newline": Component("newline.npy", sha256_file(directory / "newline.npy"), {},
                                 {"newline": TensorSpec(shape=(hidden,), dtype="float32")}),
        },
        versions={"python": "3.10.12", "tensorrt": "10.3.0.30", "onnx": "1.16.0"},
        device={"name": "Orin", "compute_capability": "8.7"},
        extra={"model": "llava-hf/llava-onevision-qwen2-0.5b-ov-hf", "image_size": image_size},
    )
    return replace(manifest, **changes)
