"""The deploy-side pipeline on real clips with the tiny model: decode -> preprocess -> encode -> prune -> LLM."""
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mmg_export.cli import main
from mmg_export.models.llava import tiny_llava
from mmg_runtime.cache import CacheStore
from mmg_runtime.errors import UserError
from mmg_runtime.llm.base import Generation, VideoPrompt
from mmg_runtime.llm.hf import TransformersBackend
from mmg_runtime.pipeline import Pipeline, Timings
from mmg_runtime.prompt import video_question_ids
from mmg_runtime.stream import LiveStream
from mmg_runtime.tensor import Tensor
from mmg_runtime.video import load_video
from samples import write_png

QUESTION = "What happens in this video?"


class RecordingBackend:
    """The real transformers backend, remembering every prompt it was given."""

    name = "transformers (recording)"

    def __init__(self, inner: TransformersBackend) -> None:
        self.inner, self.prompts, self.embeds = inner, [], []
        self.max_context = inner.max_context

    def generate(self, prompt: VideoPrompt, max_new_tokens: int, on_token=None, **options) -> Generation:
        self.prompts.append(prompt)
        self.embeds.append(prompt.embeds_numpy().copy())
        return self.inner.generate(prompt, max_new_tokens, on_token, **options)


@pytest.fixture(scope="module")
def pipeline(artifacts):
    return Pipeline.from_artifacts(artifacts, llm=RecordingBackend(TransformersBackend(artifacts / "model")))


def test_exactly_k_plus_one_video_embeddings_reach_the_llm(pipeline, bikes):
    answer = pipeline.ask(bikes, QUESTION, max_new_tokens=8)
    prompt, embeds = pipeline.llm.prompts[-1], pipeline.llm.embeds[-1]
    assert isinstance(prompt.video_embeds, Tensor) and prompt.video_embeds.shape == (1568 + 1, 64)
    newline = tiny_llava().model.model.image_newline.detach().numpy()
    np.testing.assert_array_equal(embeds[-1], newline)
    assert prompt.input_ids.count(prompt.video_token_id) == 1
    assert answer.kept_indices.shape == (1568,) and np.all(np.diff(answer.kept_indices) > 0)
    timings = answer.timings
    assert timings.tokens_kept == 1568 and timings.tokens_total == 6272 and 1 <= timings.generated_tokens <= 8
    assert 1 <= len(answer.token_ids) <= 8 and answer.text
    assert timings.question_to_first_token >= timings.prune + timings.prefill > 0


def test_kept_tokens_are_the_encoders_tokens_at_the_kept_indices(pipeline, bikes, monkeypatch):
    """What reaches the LLM is tokens[kept_indices] of this very video (no stale or shifted rows)."""
    monkeypatch.setattr(pipeline, "cache", CacheStore(0))  # encode now, into pipeline.tokens
    answer = pipeline.ask(bikes, QUESTION, max_new_tokens=1)
    tokens = pipeline.tokens.numpy().reshape(-1, 64)
    np.testing.assert_array_equal(pipeline.llm.embeds[-1][:-1], tokens[answer.kept_indices])


def test_greedy_generation_is_deterministic(pipeline, bikes):
    clip = load_video(bikes, 32)
    first, second = (pipeline.ask(clip, QUESTION, max_new_tokens=10) for _ in range(2))
    assert first.token_ids == second.token_ids
    assert first.kept_indices.tolist() == second.kept_indices.tolist()


def test_file_and_array_of_the_same_frames_agree(pipeline, bikes, monkeypatch):
    """Chunked decode + encode of the file gives the tokens of the frames decoded up front."""
    monkeypatch.setattr(pipeline, "cache", CacheStore(0))  # both encoded, into pipeline.tokens
    from_file = pipeline.ask(bikes, QUESTION, max_new_tokens=1)
    file_tokens = pipeline.tokens.numpy()
    from_array = pipeline.ask(load_video(bikes, 32).frames, QUESTION, max_new_tokens=1)
    np.testing.assert_array_equal(pipeline.tokens.numpy(), file_tokens)
    assert from_file.kept_indices.tolist() == from_array.kept_indices.tolist()


def test_original_position_ids_option(artifacts, bikes):
    backend = RecordingBackend(TransformersBackend(artifacts / "model"))
    kept = Pipeline.from_artifacts(artifacts, llm=backend, keep_positions=True, warm_up=False)
    answer = kept.ask(bikes, QUESTION, max_new_tokens=4)
    prompt = backend.prompts[-1]
    assert prompt.video_position_ids.tolist() == answer.kept_indices.tolist() + [6272]
    positions = backend.inner.position_ids(prompt)[0].tolist()
    at = prompt.placeholder_index()
    assert positions[:at] == list(range(at))
    assert positions[at:at + 1569] == [at + i for i in answer.kept_indices.tolist()] + [at + 6272]
    assert positions[at + 1569] == at + 6273


def test_unpruned_pipeline_reproduces_transformers_generate(full_artifacts, bikes):
    """Ratio 1.0 keeps every token: encoder + pruner + our embeddings and greedy loop must give the very
    tokens of LlavaOnevisionForConditionalGeneration.generate(pixel_values_videos=...) on the same pixels."""
    backend = TransformersBackend(full_artifacts / "model")
    pipeline = Pipeline.from_artifacts(full_artifacts, llm=backend, warm_up=False)
    clip = load_video(bikes, 32)
    answer = pipeline.ask(clip, QUESTION, max_new_tokens=12)

    pixels = pipeline.preprocessor.session.run({"frames": clip.frames})["pixel_values"]
    model = backend.model
    video_id = model.config.video_token_index
    ids = video_question_ids(pipeline.tokenizer, QUESTION)
    at = ids.index(video_id)
    expanded = ids[:at] + [video_id] * (32 * 196 + 1) + ids[at + 1:]
    with torch.no_grad():
        reference = model.generate(input_ids=torch.tensor([expanded]), pixel_values_videos=torch.from_numpy(pixels)[None],
                                   max_new_tokens=12, do_sample=False)
    expected = reference[0, len(expanded):].tolist()
    assert len(answer.token_ids) >= 4
    assert answer.token_ids == expected


def test_pruned_and_unpruned_both_answer_from_the_cli(artifacts, full_artifacts, bikes, capsys):
    for directory in (artifacts, full_artifacts):
        assert main(["run", "--video", str(bikes), "--prompt", QUESTION, "--artifacts", str(directory),
                     "--max-new-tokens", "6"]) == 0
        captured = capsys.readouterr()
        assert captured.out.strip()
        for stage in ("load", "decode", "preprocess", "encode", "prune", "prefill", "generation", "to 1st token"):
            assert f"  {stage}" in captured.err
    assert "tokens kept   6272 of 6272" in captured.err


def test_run_json_is_one_object_with_every_stage(artifacts, bikes, capsys):
    assert main(["run", "--video", str(bikes), "--prompt", QUESTION, "--artifacts", str(artifacts),
                 "--max-new-tokens", "3", "--json"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out)
    assert out.count("\n") == 1 and isinstance(result["answer"], str)
    assert set(result["timings_ms"]) == {"load", "decode", "preprocess", "encode", "prune", "prefill", "generation"}
    assert all(value > 0 for value in result["timings_ms"].values())
    assert result["timings_ms"]["load"] > result["timings_ms"]["prefill"]  # the warm-up ran at load
    assert result["question_to_first_token_ms"] > result["timings_ms"]["prefill"]
    assert (result["tokens_kept"], result["tokens_total"]) == (1568, 6272) and 1 <= result["generated_tokens"] <= 3
    assert result["providers"] == {"decoder": "pyav", "preprocess": ["CPUExecutionProvider"],
                                   "encoder": ["CPUExecutionProvider"], "pruner": ["CPUExecutionProvider"],
                                   "llm": "transformers"}


def test_nan_tokens_are_refused_on_the_device(pipeline):
    tokens = pipeline.tokens.numpy()
    tokens[3, 7, 11] = np.nan
    with pytest.raises(UserError, match="the encoder produced NaN or inf tokens"):
        pipeline.prune(Tensor.from_numpy(tokens))
    tokens[3, 7, 11] = np.inf
    with pytest.raises(UserError, match="NaN or inf"):
        pipeline.prune(Tensor.from_numpy(tokens))


@pytest.mark.parametrize("count", [0, -1, True])
def test_max_new_tokens_below_one_is_refused(pipeline, bikes, count):
    with pytest.raises(UserError, match=r"max_new_tokens=.*: expected an integer >= 1"):
        pipeline.ask(bikes, QUESTION, max_new_tokens=count)


def test_loading_warms_up_with_a_720p_question(artifacts, bigbuckbunny):
    """Checked as work done, not time (the benchmark times it): loading asks a question of 720p frames
    and a follow-up, so a first 720p question finds its buffers made and every stage already run once,
    and the LLM has prefilled from a cached prefix; the warm-up leaves nothing in the cache."""
    pipeline = Pipeline.from_artifacts(artifacts, llm=RecordingBackend(TransformersBackend(artifacts / "model")))
    first, follow_up = pipeline.llm.prompts
    assert follow_up.video_key == first.video_key and follow_up.embeds_numpy().tobytes() == \
        first.embeds_numpy().tobytes()
    assert pipeline.load_seconds > 0 and len(pipeline.cache) == 0 and pipeline.cache.nbytes == 0
    buffer = pipeline.chunk_encoder.frame_buffer(720, 1280)
    answer = pipeline.ask(bigbuckbunny, QUESTION, max_new_tokens=1)
    assert pipeline.chunk_encoder.frame_buffer(720, 1280) is buffer and len(pipeline.llm.prompts) == 3
    assert answer.timings.load == pipeline.load_seconds and answer.reused == ()


def test_loading_warms_up_with_the_question_to_come(artifacts, bigbuckbunny):
    """The LLM's first prefill at a prompt length costs more (BENCHMARKS.md): given the question to
    come, the warm-up asks it, so the first real prefill has a length the LLM has run."""
    default = Pipeline.from_artifacts(artifacts, llm=RecordingBackend(TransformersBackend(artifacts / "model")))
    given = Pipeline.from_artifacts(artifacts, llm=RecordingBackend(TransformersBackend(artifacts / "model")),
                                    warm_up_question=QUESTION)
    given.ask(bigbuckbunny, QUESTION, max_new_tokens=1)
    (generic, _), (warm_up, _, first) = default.llm.prompts, given.llm.prompts
    assert warm_up.input_ids == first.input_ids
    assert generic.sequence_length != first.sequence_length


def test_run_warms_up_with_its_prompt(artifacts, bikes, monkeypatch, capsys):
    asked, real_warm_up = [], Pipeline.warm_up

    def recording_warm_up(self, question):
        asked.append(question)
        real_warm_up(self, question)

    monkeypatch.setattr(Pipeline, "warm_up", recording_warm_up)
    assert main(["run", "--video", str(bikes), "--prompt", "Who rides the bikes?", "--artifacts", str(artifacts),
                 "--max-new-tokens", "1", "--json"]) == 0
    assert asked == ["Who rides the bikes?"] and json.loads(capsys.readouterr().out)["generated_tokens"] == 1


def test_run_closes_the_pipeline_after_an_answer_and_after_an_error(artifacts, bikes, tmp_path, monkeypatch, capsys):
    """Closing a pipeline saves TensorRT-RTX's runtime cache: ``run`` closes it on every path."""
    closed, real_close = [], Pipeline.close

    def recording_close(self):
        closed.append(self)
        real_close(self)

    monkeypatch.setattr(Pipeline, "close", recording_close)
    bad = tmp_path / "bad"  # its image's header reads (so run loads), its pixel data does not decode
    bad.mkdir()
    write_png(bad / "f0.png", np.zeros((48, 64, 3), np.uint8))
    data = (bad / "f0.png").read_bytes()
    start, end = data.index(b"IDAT") + 4, data.index(b"IEND") - 8
    (bad / "f0.png").write_bytes(data[:start] + bytes(end - start) + data[end:])
    for video, code in ((bikes, 0), (bad, 1)):
        assert main(["run", "--video", str(video), "--prompt", QUESTION, "--artifacts", str(artifacts),
                     "--max-new-tokens", "1", "--json"]) == code
    assert len(closed) == 2 and closed[0] is not closed[1]
    assert f"cannot decode image {bad / 'f0.png'}" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# Live streams


class WrappedEncoder:
    """A stream's real ChunkEncoder, counting its calls and optionally slowed down."""

    def __init__(self, inner, delay: float = 0.0) -> None:
        self.inner, self.delay, self.calls = inner, delay, []

    def frame_buffer(self, height: int, width: int):
        return self.inner.frame_buffer(height, width)

    def __call__(self, frames, tokens, timings) -> None:
        self.calls.append(frames.shape)
        time.sleep(self.delay)
        self.inner(frames, tokens, timings)


def test_stream_samples_in_time_and_encodes_each_sample_once(pipeline, bikes):
    """bikes.mp4 is 10 s at 25 fps: at 5 samples per second, 50 frames are encoded, no more."""
    stream = LiveStream(pipeline, str(bikes), sample_fps=5, realtime=False)
    stream.encoder = counted = WrappedEncoder(stream.encoder)
    stream.start()
    stream.wait()
    answer = stream.ask(QUESTION, max_new_tokens=4)
    assert len(counted.calls) == stream.stats.frames_encoded == 50 and stream.stats.frames_dropped == 0
    assert stream.stats.window_seconds == pytest.approx(32 / 5, abs=0.05)  # the last 32 samples, 0.2 s apart
    assert answer.timings.tokens_kept == 1568 and answer.note == ""
    assert answer.extra["frames_encoded"] == 50 and answer.extra["frames_dropped"] == 0


def test_stream_window_holds_the_last_samples_in_order(pipeline, bikes):
    """The window is the tokens of samples 18..49 (the last 32), oldest first."""
    stream = LiveStream(pipeline, str(bikes), sample_fps=5, realtime=False).start()
    stream.wait()
    stream._ordered_window()
    window = stream.window.numpy()
    from mmg_runtime.video import iter_frames

    samples = [frame for _, frame in iter_frames(str(bikes), sample_fps=5)]
    expected = np.empty((2, 196, 64), np.float32)
    single = stream.encoder
    for row, sample in enumerate((samples[18], samples[49])):
        buffer = single.frame_buffer(*sample.shape[:2]).rows(0, 1)
        buffer.copy_from(sample)
        single(buffer, Tensor.from_numpy(expected[row:row + 1]), Timings())
    np.testing.assert_array_equal(window[0], expected[0])
    np.testing.assert_array_equal(window[-1], expected[1])


def test_short_window_repeats_frames_uniformly(pipeline, bikes):
    stream = LiveStream(pipeline, str(bikes), sample_fps=0.5, realtime=False).start()
    stream.wait()  # samples at 0, 2, 4, 6, 8 s
    count = stream.stats.frames_encoded
    note, _ = stream._ordered_window()
    assert count == 5 and note == "only 5 frames so far; 32 expected: frames repeated"
    window, ring = stream.window.numpy(), stream.ring.numpy()
    for position in range(32):  # each of the n frames about 32 / n times, in order
        np.testing.assert_array_equal(window[position], ring[position * count // 32])


def test_live_stream_drops_instead_of_falling_behind(pipeline, bikes):
    """Sampling every frame of a 25 fps replay with an encoder slowed to 100 ms: frames are dropped,
    counted, and what is encoded stays within a frame of real time."""
    stream = LiveStream(pipeline, str(bikes), sample_fps=25, realtime=True)
    stream.encoder = WrappedEncoder(stream.encoder, delay=0.1)
    stream.start()
    stream.wait(stream_seconds=2.0)
    stream.stop()
    stats = stream.stats
    assert stats.frames_dropped > 10 and stats.frames_encoded + stats.frames_dropped == stats.frames_sampled
    assert stats.frames_encoded <= 2.0 / 0.1 + 2


def test_stream_json_reports_frames_and_window(artifacts, bikes, capsys):
    assert main(["run", "--stream", str(bikes), "--prompt", QUESTION, "--artifacts", str(artifacts),
                 "--sample-fps", "8", "--ask-after", "1.0", "--max-new-tokens", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["frames_encoded"] == 9 and result["frames_dropped"] == 0  # samples at 0, 0.125, ..., 1.0 s
    assert result["window_seconds"] == pytest.approx(9 / 8)
    assert "only 9 frames so far" in result["note"]


def test_stream_source_errors_are_one_line(artifacts, tmp_path, capsys):
    assert main(["run", "--stream", str(tmp_path / "nope.mp4"), "--prompt", QUESTION,
                 "--artifacts", str(artifacts)]) == 1
    err = capsys.readouterr().err
    assert f"--stream {tmp_path / 'nope.mp4'}: no such file or folder" in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------------------------
# Errors


def test_unreadable_video_is_one_line(artifacts, tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    for path in (tmp_path / "missing.mp4", bad):
        assert main(["run", "--video", str(path), "--prompt", QUESTION, "--artifacts", str(artifacts)]) == 1
        err = capsys.readouterr().err
        assert path.name in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_short_video_says_what_was_done(pipeline):
    frames = np.random.default_rng(0).integers(0, 255, (5, 64, 64, 3), dtype=np.uint8)
    answer = pipeline.ask(frames, QUESTION, max_new_tokens=2)
    assert "5 frames" in answer.note and "repeated" in answer.note


def test_prompt_without_room_in_the_context(pipeline, bikes):
    with pytest.raises(UserError, match=r"more than the model's context of 32768"):
        pipeline.ask(bikes, QUESTION, max_new_tokens=40_000)


def test_artifacts_from_another_version_are_refused(artifacts, tmp_path, capsys):
    copy = tmp_path / "old"
    shutil.copytree(artifacts, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert main(["run", "--video", "x.mp4", "--prompt", QUESTION, "--artifacts", str(copy)]) == 1
    assert "schema" in capsys.readouterr().err


def test_a_gpu_artifact_without_the_cuda_provider_is_refused(artifacts, bikes, tmp_path, capsys):
    """No silent fall-back to the CPU: a manifest asking for CUDA on a machine without it is one line."""
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    copy = tmp_path / "gpu"
    shutil.copytree(artifacts, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["extra"]["providers"] = [["CUDAExecutionProvider", {"use_tf32": "0"}], ["CPUExecutionProvider", {}]]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert main(["run", "--video", str(bikes), "--prompt", QUESTION, "--artifacts", str(copy)]) == 1
    err = capsys.readouterr().err
    assert "preprocess.onnx: needs ONNX Runtime's CUDAExecutionProvider, which this onnxruntime lacks" in err
    assert "does not fall back to another device" in err


def test_unknown_provider_option_is_refused(artifacts, bikes, tmp_path, capsys):
    copy = tmp_path / "opts"
    shutil.copytree(artifacts, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["extra"]["providers"] = [["CPUExecutionProvider", {"use_tf64": "1"}]]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert main(["run", "--video", str(bikes), "--prompt", QUESTION, "--artifacts", str(copy)]) == 1
    assert "unknown option 'use_tf64' for CPUExecutionProvider" in capsys.readouterr().err


def test_runtime_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import mmg_runtime.pipeline, mmg_runtime.stream, mmg_runtime.sessions, mmg_runtime.cli\n"
            "import mmg_runtime.nvdec, mmg_runtime.tensor, mmg_runtime.preprocess\n"
            "import mmg_runtime.llm.trtllm_engine, mmg_runtime.llm.trtllm_llmapi, mmg_runtime.trt_engine\n"
            "print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr


def test_tensorrt_llm_backends_need_a_directory(artifacts, bikes, capsys):
    assert main(["run", "--video", str(bikes), "--prompt", QUESTION, "--artifacts", str(artifacts),
                 "--llm", "trtllm-engine"]) == 1
    assert "--llm trtllm-engine needs --model DIR" in capsys.readouterr().err


def test_tensorrt_llm_missing_is_one_line(artifacts, bikes, tmp_path, capsys):
    if __import__("importlib").util.find_spec("tensorrt_llm") is not None:
        pytest.skip("TensorRT-LLM is installed here")
    assert main(["run", "--video", str(bikes), "--prompt", QUESTION, "--artifacts", str(artifacts),
                 "--llm", "trtllm-api", "--model", str(tmp_path)]) == 1
    assert "TensorRT-LLM is not installed" in capsys.readouterr().err


def test_relative_model_is_resolved_against_the_working_directory(artifacts, bikes, monkeypatch, capsys):
    monkeypatch.chdir(artifacts.parent)
    model = f"{artifacts.name}/model"  # relative to the cwd, not to the artifact directory
    assert main(["run", "--video", str(bikes), "--prompt", QUESTION, "--artifacts", str(artifacts),
                 "--model", model, "--max-new-tokens", "2"]) == 0
    assert capsys.readouterr().out.strip()


def test_tokens_are_handed_over_as_they_are_generated(pipeline, bikes):
    seen = []
    answer = pipeline.ask(bikes, QUESTION, max_new_tokens=6, on_token=lambda token: seen.append(
        (token, len(pipeline.llm.prompts))))
    assert [token for token, _ in seen] == answer.token_ids and len(seen) >= 2


@pytest.mark.parametrize("version", ["1.22.0", "1.9.0", "1.20.1"])
def test_an_onnxruntime_older_than_opset_23_is_named(version):
    from mmg_runtime.sessions import check_version

    with pytest.raises(UserError) as error:
        check_version(version, Path("encoder.onnx"))
    assert str(error.value) == (f"encoder.onnx: needs onnxruntime >= 1.23 (the artifacts use ONNX opset 23), this one "
                                f"is {version}: pip install -U 'onnxruntime>=1.23' (or onnxruntime-gpu)")


@pytest.mark.parametrize("version", ["1.23.0", "1.30.0", "1.31.1+cu130", "2.0.0"])
def test_onnxruntime_1_23_and_newer_pass(version):
    from mmg_runtime.sessions import check_version

    check_version(version, Path("encoder.onnx"))
