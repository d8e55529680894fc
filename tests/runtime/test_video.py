"""mmg_runtime.video: sampling, loading, preprocessing (vs transformers / torch) and FrameStream."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from mmg_runtime import video
from mmg_runtime.errors import UserError
from mmg_runtime.video import FrameStream, PyAVReader, iter_frames, load_video, sample_frame_indices
from samples import write_jpeg, write_png


def gradient(index: int, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """Frame ``index`` of the test clips, (H, W, 3) uint8 RGB: a gradient shifted by ``index``."""
    base = np.add.outer(np.arange(size[1]), np.arange(size[0]))
    return (np.stack([base + index, base * 2 - index, np.full_like(base, index)], axis=-1) % 256).astype(np.uint8)


PIX_FMTS = {"libx264": "yuv420p", "mjpeg": "yuvj444p", "ffv1": "bgr0"}  # ffv1 in RGB: lossless


def write_clip(path: Path, frames: int, keyint: int = 250, size: tuple[int, int] = (64, 48), *,
               codec: str = "libx264", pts: list[int] | None = None, audio: bool = False,
               options: dict[str, str] | None = None) -> Path:
    """A clip (container from the suffix) whose frame i is ``gradient(i)``, 25 fps.

    libx264: a keyframe every ``keyint`` frames, no B-frames; mjpeg and ffv1 (lossless): every frame a keyframe.
    pts: the frames' timestamps in 1/25 s (default 0, 1, 2, ...). audio: a silent AAC track beside the
    video. options: the muxer's, e.g. ``{"movflags": "faststart"}`` (an MP4 with its index up front).
    """
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = *size, PIX_FMTS[codec]
        if codec == "libx264":
            stream.options = {"g": str(keyint), "keyint_min": str(keyint), "sc_threshold": "0", "bf": "0"}
        sound = container.add_stream("aac", rate=8000) if audio else None
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(gradient(i, size), format="rgb24").reformat(format=PIX_FMTS[codec])
            if pts is not None:
                frame.pts, frame.time_base = pts[i], Fraction(1, 25)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None:
            for i in range(frames * 320 // 1024 + 1):  # 8000 / 25 = 320 samples a video frame
                silence = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
                silence.sample_rate, silence.pts = 8000, i * 1024
                for packet in sound.encode(silence):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)
    return path


def every_frame(path: Path) -> list[np.ndarray]:
    """Every frame of the video stream, decoded with PyAV directly, as (H, W, 3) uint8 RGB."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def video_packets(path: Path) -> list[av.Packet]:
    """The video stream's packets (with data) in file order."""
    with av.open(str(path)) as container:
        return [packet for packet in container.demux(video=0) if packet.size]


def corrupt_frame(path: Path, index: int) -> Path:
    """Zero most of video packet ``index``'s payload in place (an MJPEG frame then fails to decode)."""
    packet = video_packets(path)[index]
    data = bytearray(path.read_bytes())
    data[packet.pos + 10:packet.pos + packet.size - 4] = bytes(packet.size - 14)
    path.write_bytes(data)
    return path


def truncate_after(path: Path, packets: int) -> Path:
    """Cut a file (with its index up front) after its first ``packets`` video packets: the header still
    counts every frame, the rest of the data is gone."""
    first = video_packets(path)[max(packets - 1, 0)]
    end = first.pos + first.size if packets else first.pos
    path.write_bytes(path.read_bytes()[:end])
    return path


def write_wav(path: Path) -> Path:
    """0.1 s of silence: a file FFmpeg opens that holds no video stream."""
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    return path


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


@pytest.mark.parametrize(("total", "num", "message"), [
    (10, 0, "num_frames must be at least 1, got 0"),
    (0, 4, "cannot sample from a clip of 0 frames: expected at least 1 frame"),
])
def test_sampling_refuses_empty_counts(total, num, message):
    with pytest.raises(UserError) as error:
        sample_frame_indices(total, num)
    assert str(error.value) == message


def test_next_sample_time_keeps_the_period_or_restarts_after_a_skip():
    assert video.next_sample_time(0.5, 0.52, 2.0) == 1.0  # frame 13 of 25 fps served the 0.5 s sample
    assert video.next_sample_time(0.0, 0.5, 2.0) == 1.0  # a frame exactly on time: due again one period later
    assert video.next_sample_time(0.0, 1.3, 2.0) == 1.8  # the source jumped past 0.5 and 1.0: restart from 1.3


@pytest.mark.parametrize(("width", "height"), [(1, 1), (4096, 4096), (1, 4096 * 4096)])
def test_frame_size_limits_accept(width, height):
    video.check_frame_size("clip.mp4", width, height)


@pytest.mark.parametrize(("width", "height", "message"), [
    (0, 5, "clip.mp4: frames of 0x5 pixels: expected a non-empty picture"),
    (5, 0, "clip.mp4: frames of 5x0 pixels: expected a non-empty picture"),
    (4097, 4096, "clip.mp4: frames of 4097x4096 pixels (16.8 MP): expected at most 16.8 MP per frame; downscale the "
                 "video first"),
    (5000, 3370, "clip.mp4: frames of 5000x3370 pixels (16.9 MP): expected at most 16.8 MP per frame; downscale the "
                 "video first"),  # 16.85 MP: rounded up
])
def test_frame_size_limits_refuse(width, height, message):
    with pytest.raises(UserError) as error:
        video.check_frame_size("clip.mp4", width, height)
    assert str(error.value) == message


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


def test_array_plan_and_defaults():
    array = np.random.default_rng(1).integers(0, 256, (20, 16, 24, 3), dtype=np.uint8)
    plan = PyAVReader().open(array, 8)
    assert (plan.source, plan.total_frames, plan.width, plan.height, plan.fps, plan.note) == (
        "array(20, 16, 24, 3)", 20, 24, 16, None, "")
    assert load_video(array).indices.tolist() == (np.arange(32) * 20 // 32).tolist()  # 32 frames by default
    assert load_video(array[:8], num_frames=8).note == ""  # as many frames as requested: nothing repeated
    linspace = load_video(array, num_frames=4, rule="linspace")
    assert linspace.indices.tolist() == [0, 6, 12, 19]
    np.testing.assert_array_equal(linspace.frames, array[[0, 6, 12, 19]])


def test_a_plan_of_unknown_work_is_a_type_error():
    plan = PyAVReader().open(np.zeros((4, 16, 24, 3), np.uint8), 4)
    odd = dataclasses.replace(plan, work=("frames", [0, 1]))
    with pytest.raises(TypeError, match=r"^array\(4, 16, 24, 3\): no way to decode tuple work; expected one of "
                                        r"ArrayFrames, ImageFiles, SequentialDecode, GopDecode$"):
        list(PyAVReader().frames(odd))


def test_reader_threads_default_to_every_core(monkeypatch):
    assert PyAVReader().threads == os.cpu_count()
    assert PyAVReader(threads=3).threads == 3
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # what os.cpu_count returns when it cannot tell
    assert PyAVReader().threads == 1


def test_folder_with_fewer_images_than_requested_and_linspace(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        write_png(folder / f"f{i}.png", gradient(i, (8, 6)))
    clip = load_video(folder, num_frames=4)
    assert (clip.source, clip.total_frames, clip.indices.tolist()) == (str(folder), 3, [0, 0, 1, 2])
    assert clip.note == "frames has 3 frames; 4 requested: frames repeated"
    np.testing.assert_array_equal(clip.frames, np.stack([gradient(i, (8, 6)) for i in (0, 0, 1, 2)]))
    assert load_video(folder, num_frames=2, rule="linspace").indices.tolist() == [0, 2]


def test_gray_and_rgba_images_load_as_rgb(tmp_path):
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    rgba = np.concatenate([gradient(1, (8, 6)), np.full((6, 8, 1), 128, np.uint8)], axis=2)
    write_png(tmp_path / "f0.png", gray)
    write_png(tmp_path / "f1.png", rgba)
    clip = load_video(tmp_path, num_frames=2)
    np.testing.assert_array_equal(clip.frames[0], np.repeat(gray[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(clip.frames[1], rgba[:, :, :3])


def test_file_sampled_by_the_linspace_rule(tmp_path):
    path = write_clip(tmp_path / "short.mp4", frames=60)
    clip = load_video(path, num_frames=4, rule="linspace")
    assert clip.indices.tolist() == [0, 19, 39, 59]
    np.testing.assert_array_equal(clip.frames, np.stack(every_frame(path))[[0, 19, 39, 59]])


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
    wav = write_wav(tmp_path / "sound.wav")
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


@pytest.mark.parametrize(("shape", "message"), [
    ((0, 4, 4, 3), "video array has 0 frames: expected at least 1"),
    ((2, 4, 0, 3), "array(2, 4, 0, 3): frames of 0x4 pixels: expected a non-empty picture"),
    ((2, 0, 4, 3), "array(2, 0, 4, 3): frames of 4x0 pixels: expected a non-empty picture"),
])
def test_error_empty_array(shape, message):
    with pytest.raises(UserError) as error:
        load_video(np.zeros(shape, np.uint8))
    assert str(error.value) == message


def test_error_empty_folder_lists_the_suffixes(tmp_path):
    with pytest.raises(UserError) as error:
        load_video(tmp_path)
    assert str(error.value) == (f"folder {tmp_path} holds no images: expected frame files (.png, .jpg, .jpeg, .bmp, "
                                ".webp, .tif, .tiff)")


def test_error_an_image_that_is_sound(tmp_path):
    wav = write_wav(tmp_path / "f0.png")
    with pytest.raises(UserError) as error:
        load_video(tmp_path, num_frames=1)
    assert str(error.value) == f"{wav} has no video stream: expected a video file"


def test_error_image_file_that_holds_no_frame(tmp_path):
    """An AVI with a video stream and no frame, named like an image: FFmpeg opens it, decodes nothing."""
    folder = tmp_path / "frames"
    folder.mkdir()
    container = av.open(str(folder / "f0.png"), "w", format="avi")
    stream = container.add_stream("mpeg4", rate=25)
    stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
    container.start_encoding()
    container.close()
    with pytest.raises(UserError) as error:
        load_video(folder, num_frames=2)
    assert str(error.value) == f"{folder / 'f0.png'} holds no image: expected a PNG/JPEG frame"


def test_error_image_data_that_does_not_decode(tmp_path):
    """The header (64 x 48) reads, the pixel data (zeroed zlib stream) does not."""
    write_png(tmp_path / "f0.png", gradient(0))
    data = (tmp_path / "f0.png").read_bytes()
    start, end = data.index(b"IDAT") + 4, data.index(b"IEND") - 8  # the pixel data, up to its CRC
    (tmp_path / "f0.png").write_bytes(data[:start] + bytes(end - start) + data[end:])
    with pytest.raises(UserError, match=rf"^cannot decode image {re.escape(str(tmp_path / 'f0.png'))}: "):
        load_video(tmp_path, num_frames=1)


def test_a_truncated_jpeg_in_a_folder_cannot_be_decoded(tmp_path):
    """Cut before its frame header, a JPEG's header reads as 0x0: the message says the file does not decode."""
    for index in range(3):
        write_jpeg(tmp_path / f"f{index}.jpg", gradient(index))
    cut = tmp_path / "f1.jpg"
    cut.write_bytes(cut.read_bytes()[:300])
    expected = f"cannot decode image {cut}: Invalid data found when processing input; expected a complete image file"
    with pytest.raises(UserError) as error:
        load_video(tmp_path, num_frames=3)
    assert str(error.value) == expected
    plan = PyAVReader().open(tmp_path, 3)  # the plan reads the first image only; the check reads every sampled one
    with pytest.raises(UserError) as error:
        video.check_sampled_images(plan)
    assert str(error.value) == expected


def test_check_video_file_reads_the_header(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", frames=5)
    assert video.check_video_file(clip) == (64, 48, 25.0, 5)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(UserError, match=r"^cannot read .*notes\.mp4: not a video or image FFmpeg can decode"):
        video.check_video_file(text)


@pytest.mark.parametrize("where", ["folder", "file"])
def test_oversized_frames_name_their_file(tmp_path, monkeypatch, where):
    """The cap is checked on every image's header, not only the first sampled one's, and on a file's."""
    monkeypatch.setattr(video, "MAX_FRAME_PIXELS", 64 * 48 - 1)
    if where == "folder":
        write_png(tmp_path / "f0.png", gradient(0, (8, 6)))
        write_png(tmp_path / "f1.png", gradient(1))
        source, named = tmp_path, tmp_path / "f1.png"
    else:
        source = named = write_clip(tmp_path / "clip.mp4", frames=4)
    with pytest.raises(UserError, match=rf"^{re.escape(str(named))}: frames of 64x48 pixels \(0.0 MP\)"):
        load_video(source, num_frames=2)


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


@pytest.mark.parametrize("entry", ["FrameStream", "iter_frames"])
def test_frame_stream_realtime_paces_at_fps(bikes, entry):
    """5 frames of 25 fps take 0.16 s, not less (and not a second a frame: a generous bound, CPU time is tiny)."""
    frames = FrameStream(str(bikes), realtime=True).iter_frames() if entry == "FrameStream" else \
        iter_frames(str(bikes), realtime=True)
    start = time.monotonic()
    stamps = [stamp for _, (stamp, _) in zip(range(5), frames)]
    elapsed = time.monotonic() - start
    assert stamps[-1] == pytest.approx(4 / 25.0)
    assert 4 / 25.0 <= elapsed < 2.5


def test_frame_stream_is_not_paced_unless_asked(tmp_path):
    path = write_clip(tmp_path / "gap.mkv", frames=2, codec="ffv1", pts=[0, 250])  # the second frame 10 s later
    start = time.monotonic()
    assert [stamp for stamp, _ in iter_frames(str(path))] == [0.0, 10.0]
    assert time.monotonic() - start < 5.0


def test_frame_stream_timestamps_start_at_zero_and_keep_gaps(tmp_path):
    """A stream whose first frame is at 0.4 s, with two frames missing after the third."""
    path = write_clip(tmp_path / "gaps.mkv", frames=5, codec="ffv1", pts=[10, 11, 12, 15, 16])
    pairs = list(iter_frames(str(path)))
    np.testing.assert_allclose([stamp for stamp, _ in pairs], [0.0, 0.04, 0.08, 0.2, 0.24], atol=1e-9)
    for i, (_, frame) in enumerate(pairs):
        np.testing.assert_array_equal(frame.array(), gradient(i))


def test_frame_stream_without_timestamps_counts_frames_at_the_rate(tmp_path):
    """A raw H.264 stream carries no timestamps: frame i is at i / 25 s."""
    path = write_clip(tmp_path / "raw.h264", frames=6)
    pairs = list(iter_frames(str(path)))
    np.testing.assert_allclose([stamp for stamp, _ in pairs], np.arange(6) / 25.0, atol=1e-9)
    np.testing.assert_array_equal(pairs[5][1].array(), every_frame(path)[5])


@pytest.mark.parametrize(("frames", "samples"), [(6, 4), (100, 4)])
def test_a_raw_h264_file_loads_in_one_pass(tmp_path, frames, samples):
    """No timestamps and no frame count in the header: frames are counted in file order, decoded in one pass."""
    path = write_clip(tmp_path / "raw.h264", frames=frames)
    clip = load_video(path, num_frames=samples)
    assert clip.total_frames == frames
    assert clip.indices.tolist() == sample_frame_indices(frames, samples).tolist()
    np.testing.assert_array_equal(clip.frames, np.stack(every_frame(path))[clip.indices])
    assert isinstance(PyAVReader().open(path, samples).work, video.SequentialDecode)


def test_frame_stream_device_format_and_options(tmp_path):
    """As for a camera: the demuxer and its options are given (raw RGB frames cannot be probed)."""
    path = tmp_path / "frames"  # no suffix: nothing names the demuxer but device_format
    path.write_bytes(b"".join(gradient(i, (16, 8)).tobytes() for i in range(3)))
    with pytest.raises(UserError, match="cannot open video stream"):
        next(iter_frames(str(path)))
    stream = FrameStream(str(path), device_format="rawvideo",
                         options={"video_size": "16x8", "pixel_format": "rgb24", "framerate": "25"})
    pairs = list(stream.iter_frames())
    assert [stamp for stamp, _ in pairs] == [0.0, 0.04, 0.08]
    for i, (_, frame) in enumerate(pairs):
        np.testing.assert_array_equal(frame.array(), gradient(i, (16, 8)))


def test_frame_stream_of_a_clip_with_sound_yields_only_pictures(tmp_path):
    path = write_clip(tmp_path / "sound.mp4", frames=10, audio=True)
    pairs = list(iter_frames(str(path)))
    reference = every_frame(path)
    assert len(pairs) == len(reference) == 10
    for (_, frame), expected in zip(pairs, reference, strict=True):
        np.testing.assert_array_equal(frame.array(), expected)


def test_frame_stream_errors_name_the_source(tmp_path):
    wav = write_wav(tmp_path / "sound.wav")
    with pytest.raises(UserError) as error:
        next(iter_frames(str(wav)))
    assert str(error.value) == f"{wav} has no video stream: expected a video file"
    broken = corrupt_frame(write_clip(tmp_path / "mjpeg.mkv", frames=30, codec="mjpeg"), 20)
    with pytest.raises(UserError, match=rf"^cannot decode video stream {re.escape(str(broken))}: .*Invalid data"):
        list(iter_frames(str(broken)))


def test_frame_stream_bad_source(tmp_path):
    with pytest.raises(UserError, match=r"cannot open video stream .*missing\.mp4"):
        next(iter_frames(str(tmp_path / "missing.mp4")))


# ----------------------------------------------------------------------------------------------
# PyAVReader: one pass, or GOPs from their keyframes


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    """400 frames of H.264 (16 s), a keyframe every 10."""
    return write_clip(tmp_path_factory.mktemp("long") / "long.mp4", frames=400, keyint=10)


@pytest.mark.parametrize(("rule", "indices", "keyframes"), [
    ("transformers", [0, 50, 100, 150, 200, 250, 300, 350], [0, 50, 100, 150, 200, 250, 300, 350]),
    ("linspace", [0, 57, 114, 171, 228, 285, 342, 399], [0, 50, 110, 170, 220, 280, 340, 390]),  # to the last frame
])
def test_sparse_sampling_decodes_only_the_gops_it_needs(long_clip, rule, indices, keyframes):
    reader = PyAVReader(threads=2, rule=rule)
    plan = reader.open(long_clip, 8)
    assert plan.indices.tolist() == indices
    assert (plan.total_frames, plan.fps, plan.note, plan.width, plan.height) == (400, 25.0, "", 64, 48)
    work = plan.work
    assert isinstance(work, video.GopDecode)
    assert work.groups == [(start, index) for start, index in zip(keyframes, indices)]
    assert len(work.pts) == 400
    decoded = dict((index, frame.array()) for index, frame in reader.frames(plan))
    reference = every_frame(long_clip)
    assert sorted(decoded) == indices
    for index in indices:
        np.testing.assert_array_equal(decoded[index], reference[index])


def test_gop_groups_by_hand():
    """Each wanted frame joins the GOP of the last keyframe at or before it; no keyframe at 0: no groups."""
    assert video._gop_groups([3, 12, 15, 20], [0, 10, 20]) == [(0, 3), (10, 12, 15), (20, 20)]
    assert video._gop_groups([3], []) is None
    assert video._gop_groups([3], [2, 10]) is None


@pytest.mark.parametrize(("frames", "kind"), [(64, video.SequentialDecode), (65, video.GopDecode)])
def test_clips_are_indexed_only_beyond_eight_frames_a_sample(tmp_path, frames, kind):
    """8 samples of 64 frames (8 a sample): one pass, unindexed, although one-frame GOPs would save;
    of 65 frames: indexed, and the GOPs are decoded."""
    plan = PyAVReader().open(write_clip(tmp_path / "clip.mp4", frames=frames, keyint=4), 8)
    assert isinstance(plan.work, kind) and plan.total_frames == frames


@pytest.mark.parametrize(("frames", "samples", "keyint", "groups", "kind"), [
    # GOP spans 1 + 2 + 3 + 5 + 6 = 17 frames decoded = half of the 34 a pass to frame 33 decodes: seek
    (42, 5, 7, [(0, 0), (7, 8), (14, 16), (21, 25), (28, 33)], video.GopDecode),
    # spans 1 + 3 + 5 + 7 = 16 frames, more than half of 31: one pass
    (40, 4, 8, [(0, 0), (8, 10), (16, 20), (24, 30)], video.SequentialDecode),
])
def test_gops_are_decoded_when_that_decodes_at_most_half(tmp_path, frames, samples, keyint, groups, kind):
    path = write_clip(tmp_path / "clip.mp4", frames=frames, keyint=keyint)
    plan = PyAVReader().open(path, samples)
    assert isinstance(plan.work, kind)
    if kind is video.GopDecode:
        assert plan.work.groups == groups
    assert video._gop_groups(np.unique(plan.indices).tolist(), list(range(0, frames, keyint))) == groups


def test_gops_of_a_clip_with_sound(tmp_path):
    path = write_clip(tmp_path / "sound.mp4", frames=100, keyint=5, audio=True)
    reader = PyAVReader(threads=2)
    plan = reader.open(path, 4)
    assert isinstance(plan.work, video.GopDecode) and plan.indices.tolist() == [0, 25, 50, 75]
    decoded = dict((index, frame.array()) for index, frame in reader.frames(plan))
    reference = every_frame(path)
    assert sorted(decoded) == [0, 25, 50, 75]
    for index in decoded:
        np.testing.assert_array_equal(decoded[index], reference[index])


@pytest.mark.parametrize(("samples", "kind", "message"), [
    (30, video.SequentialDecode, "at frame 20"),  # every frame wanted: one pass, which stops at the broken frame
    (3, video.GopDecode, "near frame 20"),  # frames 0, 10, 20: each from its own keyframe
])
def test_a_frame_that_does_not_decode_is_one_line(tmp_path, samples, kind, message):
    path = corrupt_frame(write_clip(tmp_path / "mjpeg.mkv", frames=30, codec="mjpeg"), 20)
    reader = PyAVReader(threads=1)
    plan = reader.open(path, samples)
    assert isinstance(plan.work, kind)
    with pytest.raises(UserError, match=rf"^cannot decode {re.escape(str(path))} {message}: .*Invalid data"):
        list(reader.frames(plan))


def test_a_file_that_ends_before_its_header_says(tmp_path):
    """The header counts 60 frames, 26 are there: sampled again over the 26, and said so."""
    path = truncate_after(write_clip(tmp_path / "cut.mp4", frames=60, options={"movflags": "faststart"}), 26)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 60
    clip = load_video(path, num_frames=32)
    assert clip.note == ("cut.mp4: header says 60 frames, 26 decoded; sampled over 26; cut.mp4 has 26 frames; 32 "
                         "requested: frames repeated")
    assert clip.total_frames == 26 and clip.indices.tolist() == (np.arange(32) * 26 // 32).tolist()
    np.testing.assert_array_equal(clip.frames, np.stack(every_frame(path))[clip.indices])


def test_a_file_with_no_frame_past_its_header(tmp_path):
    path = truncate_after(write_clip(tmp_path / "cut.mp4", frames=60, options={"movflags": "faststart"}), 0)
    with pytest.raises(UserError) as error:
        load_video(path)
    assert str(error.value) == f"{path} has no decodable video frames: expected a non-empty video"


def test_dense_sampling_decodes_in_one_pass(tmp_path):
    path = write_clip(tmp_path / "short.mp4", frames=60, keyint=250)
    plan = PyAVReader().open(path, 32)
    assert isinstance(plan.work, video.SequentialDecode)
    assert plan.indices.tolist() == (np.arange(32) * 60 // 32).tolist()
    reference = every_frame(path)
    for index, frame in PyAVReader().frames(plan):
        np.testing.assert_array_equal(frame.array(), reference[index])


def test_long_gops_fall_back_to_one_pass(tmp_path):
    """Sampled frames spread over 2 GOPs of 200: decoding from keyframes saves too little."""
    plan = PyAVReader().open(write_clip(tmp_path / "g200.mp4", frames=400, keyint=200), 8)
    assert isinstance(plan.work, video.SequentialDecode)


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
    wrong = video.VideoPlan(plan.source, plan.total_frames, plan.indices, 32, 48, plan.fps, "", work=plan.work)
    with pytest.raises(UserError, match=r"a frame of 64x48 in a video of 32x48: expected one frame size"):
        list(PyAVReader().frames(wrong))


def test_empty_video_argument_is_refused():
    with pytest.raises(UserError, match=r"cannot read a video from '': expected a video file"):
        load_video("")
