"""mmg_runtime.video: sampling, loading, preprocessing (vs transformers / torch) and FrameStream."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from mmg_runtime import video
from mmg_runtime.errors import UserError
from mmg_runtime.video import FrameStream, PyAVReader, iter_frames, load_video, sample_frame_indices


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write one (H, W, 3) uint8 image as PNG with PyAV."""
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = rgb.shape[1], rgb.shape[0], "rgb24"
        for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# ----------------------------------------------------------------------------------------------
# Sampling


@pytest.mark.parametrize(
    ("total", "num", "expected"),
    [
        (132, 8, [0, 16, 33, 49, 66, 82, 99, 115]),  # i * 132 // 8 = floor(16.5 i)
        (10, 4, [0, 2, 5, 7]),  # floor(2.5 i)
        (32, 32, list(range(32))),
        (7, 1, [0]),
        (250, 5, [0, 50, 100, 150, 200]),
    ],
)
def test_sampling_matches_transformers_and_hand_values(total, num, expected):
    from transformers.video_utils import VideoMetadata, default_sample_indices_fn

    ours = sample_frame_indices(total, num)
    theirs = default_sample_indices_fn(VideoMetadata(total_num_frames=total), num_frames=num)
    assert ours.dtype == np.int64
    assert ours.tolist() == expected == theirs.tolist()


def test_sampling_fewer_frames_than_requested_repeats_in_order():
    from transformers.video_utils import VideoMetadata, default_sample_indices_fn

    assert sample_frame_indices(5, 8).tolist() == [0, 0, 1, 1, 2, 3, 3, 4]  # floor(5 i / 8)
    assert sample_frame_indices(1, 3).tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="exceeds total_num_frames"):  # transformers refuses instead
        default_sample_indices_fn(VideoMetadata(total_num_frames=5), num_frames=8)


def test_sampling_linspace_rule_is_llava_next():
    assert sample_frame_indices(132, 8, "linspace").tolist() == [0, 18, 37, 56, 74, 93, 112, 131]
    assert sample_frame_indices(132, 8, "linspace").tolist() == np.linspace(0, 131, 8, dtype=int).tolist()
    with pytest.raises(UserError, match="unknown frame sampling rule 'middle'"):
        sample_frame_indices(132, 8, "middle")


# ----------------------------------------------------------------------------------------------
# Loading


def test_load_real_clip(bigbuckbunny):
    clip = load_video(bigbuckbunny, num_frames=8)
    assert clip.frames.shape == (8, 720, 1280, 3) and clip.frames.dtype == np.uint8
    assert clip.indices.tolist() == [0, 16, 33, 49, 66, 82, 99, 115]
    assert (clip.total_frames, clip.fps, clip.note) == (132, 25.0, "")
    assert clip.source == str(bigbuckbunny)
    with av.open(str(bigbuckbunny)) as container:  # frame 16 is the 17th decoded frame
        frame16 = [f for _, f in zip(range(17), container.decode(video=0))][-1].to_ndarray(format="rgb24")
    np.testing.assert_array_equal(clip.frames[1], frame16)


def test_load_clip_with_fewer_frames_than_requested(clip_path):
    clip = load_video(clip_path("carphone_pristine.mp4"), num_frames=128)  # 176x144, 120 frames
    assert clip.frames.shape == (128, 144, 176, 3) and clip.total_frames == 120
    assert clip.fps == pytest.approx(30000 / 1001)
    assert clip.indices.tolist() == (np.arange(128) * 120 // 128).tolist()
    assert clip.note == "carphone_pristine.mp4 has 120 frames; 128 requested: frames repeated"
    np.testing.assert_array_equal(clip.frames[0], clip.frames[1])  # indices 0, 0


def test_load_folder_of_images_in_natural_order(tmp_path):
    frames = np.stack([np.full((6, 10, 3), 20 * i, np.uint8) for i in range(10)])
    frames[:, 0, 0] = [255, 0, 0]
    for i, frame in enumerate(frames):
        write_png(tmp_path / f"f{i + 1}.png", frame)  # f1 .. f10: "f10" must sort last
    (tmp_path / "notes.txt").write_text("not a frame")
    clip = load_video(tmp_path, num_frames=4)
    assert clip.indices.tolist() == [0, 2, 5, 7]
    np.testing.assert_array_equal(clip.frames, frames[[0, 2, 5, 7]])
    assert (clip.total_frames, clip.fps, clip.note) == (10, None, "")


def test_load_array(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (20, 16, 24, 3), dtype=np.uint8)
    clip = load_video(array, num_frames=32)
    assert clip.indices.tolist() == (np.arange(32) * 20 // 32).tolist()
    np.testing.assert_array_equal(clip.frames, array[clip.indices])
    assert clip.note == "array(20, 16, 24, 3) has 20 frames; 32 requested: frames repeated"
    assert load_video(array, num_frames=4).note == ""


# ----------------------------------------------------------------------------------------------
# Errors: each names the input and what was expected


def test_error_missing_file(tmp_path):
    with pytest.raises(UserError, match=r"video not found: .*nope\.mp4 \(expected a video file, a folder"):
        load_video(tmp_path / "nope.mp4")


def test_error_not_a_video(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is text, not H.264")
    with pytest.raises(UserError, match=r"cannot read .*notes\.mp4: not a video or image FFmpeg can decode"):
        load_video(bad)


def test_error_zero_frames(tmp_path):
    empty = tmp_path / "empty.avi"
    container = av.open(str(empty), "w")
    stream = container.add_stream("mpeg4", rate=25)
    stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
    container.start_encoding()
    container.close()
    with pytest.raises(UserError, match=r"empty\.avi has 0 video frames: expected a non-empty video"):
        load_video(empty)


def test_error_no_video_stream(tmp_path):
    wav = tmp_path / "sound.wav"
    with av.open(str(wav), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(UserError, match=r"sound\.wav has no video stream: expected a video file"):
        load_video(wav)


def test_error_empty_folder(tmp_path):
    (tmp_path / "frames").mkdir()
    with pytest.raises(UserError, match=r"folder .*frames holds no images: expected frame files \(\.png"):
        load_video(tmp_path / "frames")


def test_error_folder_images_differ_in_size(tmp_path):
    write_png(tmp_path / "a.png", np.zeros((4, 6, 3), np.uint8))
    write_png(tmp_path / "b.png", np.zeros((5, 6, 3), np.uint8))
    with pytest.raises(UserError, match=r"differ in size: b\.png is 6x5, the first sampled image is 6x4; expected frames of one size"):
        load_video(tmp_path, num_frames=2)


def test_error_unreadable_image(tmp_path):
    (tmp_path / "f1.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(UserError, match=r"f1\.png"):
        load_video(tmp_path, num_frames=1)


@pytest.mark.parametrize(
    ("array", "shown"),
    [
        (np.zeros((4, 8, 8), np.uint8), r"shape \(4, 8, 8\) and dtype uint8"),
        (np.zeros((4, 8, 8, 3), np.float32), r"shape \(4, 8, 8, 3\) and dtype float32"),
        (np.zeros((4, 8, 8, 4), np.uint8), r"shape \(4, 8, 8, 4\) and dtype uint8"),
    ],
)
def test_error_bad_array(array, shown):
    with pytest.raises(UserError, match=shown + r": expected \(N, H, W, 3\) uint8 RGB"):
        load_video(array)


def test_error_num_frames_below_one(tmp_path):
    with pytest.raises(UserError, match="num_frames must be at least 1, got 0"):
        load_video(np.zeros((2, 4, 4, 3), np.uint8), num_frames=0)


def test_video_module_imports_without_torch():
    code = "import sys, mmg_runtime.video; assert 'torch' not in sys.modules and 'PIL' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------------------------
# FrameStream


def test_frame_stream_timestamps_and_frames(bikes):
    pairs = [pair for _, pair in zip(range(30), iter_frames(str(bikes), realtime=False))]
    stamps = np.array([stamp for stamp, _ in pairs])
    np.testing.assert_allclose(stamps, np.arange(30) / 25.0, atol=1e-9)
    with av.open(str(bikes)) as container:
        decoded = [f.to_ndarray(format="rgb24") for _, f in zip(range(30), container.decode(video=0))]
    for (_, frame), expected in zip(pairs, decoded, strict=True):
        np.testing.assert_array_equal(frame.array(), expected)


def test_frame_stream_samples_in_time(bikes):
    """2 frames per second of a 25 fps clip: frames 0, 12.5 -> 13, 25, ... (the first at or after each 0.5 s)."""
    pairs = list(iter_frames(str(bikes), sample_fps=2.0))
    stamps = [round(stamp, 2) for stamp, _ in pairs]
    assert stamps[:4] == [0.0, 0.52, 1.0, 1.52] and len(pairs) == 20  # 250 frames = 10 s
    with av.open(str(bikes)) as container:
        frame13 = [f for _, f in zip(range(14), container.decode(video=0))][-1].to_ndarray(format="rgb24")
    np.testing.assert_array_equal(pairs[1][1].array(), frame13)


def test_frame_stream_realtime_paces_at_fps(bikes):
    start = time.monotonic()
    stamps = [stamp for _, (stamp, _) in zip(range(5), FrameStream(str(bikes), realtime=True).iter_frames())]
    elapsed = time.monotonic() - start
    assert stamps[-1] == pytest.approx(4 / 25.0)
    assert elapsed >= 4 / 25.0


def test_frame_stream_bad_source(tmp_path):
    with pytest.raises(UserError, match=r"cannot open video stream .*missing\.mp4"):
        next(iter_frames(str(tmp_path / "missing.mp4")))


# ----------------------------------------------------------------------------------------------
# PyAVReader: one pass, or GOPs from their keyframes


def write_clip(path: Path, frames: int, keyint: int, size: tuple[int, int] = (64, 48)) -> Path:
    """An H.264 clip whose frame i shows a gradient shifted by i (keyframe every ``keyint`` frames)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        stream.options = {"g": str(keyint), "keyint_min": str(keyint), "sc_threshold": "0", "bf": "0"}
        base = np.add.outer(np.arange(size[1]), np.arange(size[0]))
        for i in range(frames):
            rgb = (np.stack([base + i, base * 2 - i, np.full_like(base, i)], axis=-1) % 256).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def every_frame(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def test_sparse_sampling_decodes_only_the_gops_it_needs(tmp_path):
    path = write_clip(tmp_path / "long.mp4", frames=400, keyint=10)
    reader = PyAVReader(threads=2)
    plan = reader.open(path, 8)
    assert plan.indices.tolist() == [0, 50, 100, 150, 200, 250, 300, 350]
    kind, groups, pts = plan.groups
    assert kind == "gops" and [group[0] for group in groups] == [0, 50, 100, 150, 200, 250, 300, 350]
    assert len(pts) == 400
    decoded = dict((index, frame.array()) for index, frame in reader.frames(plan))
    reference = every_frame(path)
    for index in plan.indices.tolist():
        np.testing.assert_array_equal(decoded[index], reference[index])


def test_dense_sampling_decodes_in_one_pass(tmp_path):
    path = write_clip(tmp_path / "short.mp4", frames=60, keyint=250)
    plan = PyAVReader().open(path, 32)
    assert plan.groups[0] == "sequential" and plan.indices.tolist() == (np.arange(32) * 60 // 32).tolist()
    reference = every_frame(path)
    for index, frame in PyAVReader().frames(plan):
        np.testing.assert_array_equal(frame.array(), reference[index])


def test_long_gops_fall_back_to_one_pass(tmp_path):
    """Sampled frames spread over 2 GOPs of 200: decoding from keyframes saves too little."""
    plan = PyAVReader().open(write_clip(tmp_path / "g200.mp4", frames=400, keyint=200), 8)
    assert plan.groups[0] == "sequential"


def test_oversized_picture_is_refused_before_decoding(tmp_path, monkeypatch):
    """A 16000 x 16000 PNG is 768 MB decoded; the cap is checked on the header, before any pixel."""
    big = tmp_path / "big"
    big.mkdir()
    write_png(big / "f0.png", np.zeros((64, 80, 3), np.uint8))
    monkeypatch.setattr(video, "MAX_FRAME_PIXELS", 64 * 79)
    decoded = []
    monkeypatch.setattr(video, "_read_image", lambda *a: decoded.append(a) or np.zeros((64, 80, 3), np.uint8))
    with pytest.raises(UserError, match=r"f0.png: frames of 80x64 pixels \(0.0 MP\): expected at most"):
        load_video(big, num_frames=32)
    assert decoded == []


def test_size_change_mid_stream_is_one_line(tmp_path):
    small = write_clip(tmp_path / "a.mp4", frames=20, keyint=250, size=(64, 48))
    plan = PyAVReader().open(small, 4)
    wrong = video.VideoPlan(plan.source, plan.total_frames, plan.indices, 32, 48, plan.fps, "", plan.groups)
    with pytest.raises(UserError, match=r"a frame of 64x48 in a video of 32x48: expected one frame size"):
        list(PyAVReader().frames(wrong))


def test_empty_video_argument_is_refused():
    with pytest.raises(UserError, match=r"cannot read a video from '': expected a video file"):
        load_video("")
