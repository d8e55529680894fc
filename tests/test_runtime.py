"""The deploy-side pipeline on a real clip with the tiny model: encode -> prune -> LLM."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from mmg_export.cli import main
from mmg_runtime.errors import UserError
from mmg_runtime.llm.base import Generation, VideoPrompt
from mmg_runtime.llm.hf import TransformersBackend
from mmg_runtime.pipeline import Pipeline
from mmg_runtime.stream import StreamingSession, replay
from mmg_runtime.video import iter_frames, load_video, preprocess_frames

QUESTION = "What happens in this video?"


class RecordingBackend:
    """The real transformers backend, remembering every prompt it was given."""

    name = "transformers (recording)"

    def __init__(self, inner: TransformersBackend) -> None:
        self.inner, self.prompts = inner, []
        self.max_context = inner.max_context

    def generate(self, prompt: VideoPrompt, max_new_tokens: int) -> Generation:
        self.prompts.append(prompt)
        return self.inner.generate(prompt, max_new_tokens)


@pytest.fixture(scope="module")
def pipeline(artifacts):
    return Pipeline.from_artifacts(artifacts, llm=RecordingBackend(TransformersBackend(artifacts / "model")))


def test_exactly_k_plus_one_video_embeddings_reach_the_llm(pipeline, bikes):
    answer = pipeline.ask(bikes, QUESTION, max_new_tokens=8)
    prompt = pipeline.llm.prompts[-1]
    assert prompt.video_embeds.shape == (1568 + 1, 64)
    np.testing.assert_array_equal(prompt.video_embeds[-1], np.load(pipeline.directory / "newline.npy"))
    assert prompt.input_ids.count(prompt.video_token_id) == 1
    assert answer.kept_indices.shape == (1568,) and np.all(np.diff(answer.kept_indices) > 0)
    assert answer.timings.tokens_kept == 1568 and answer.timings.tokens_total == 6272
    assert 1 <= len(answer.token_ids) <= 8 and answer.text


def test_greedy_generation_is_deterministic(pipeline, bikes):
    clip = load_video(bikes, 32)
    first, second = (pipeline.ask(clip, QUESTION, max_new_tokens=10) for _ in range(2))
    assert first.token_ids == second.token_ids
    assert first.kept_indices.tolist() == second.kept_indices.tolist()


def test_original_position_ids_option(artifacts, bikes):
    backend = RecordingBackend(TransformersBackend(artifacts / "model"))
    kept = Pipeline.from_artifacts(artifacts, llm=backend, keep_positions=True)
    answer = kept.ask(bikes, QUESTION, max_new_tokens=4)
    prompt = backend.prompts[-1]
    assert prompt.video_position_ids.tolist() == answer.kept_indices.tolist() + [6272]
    positions = backend.inner.position_ids(prompt)[0].tolist()
    at = prompt.placeholder_index()
    assert positions[:at] == list(range(at))
    assert positions[at:at + 1569] == [at + i for i in answer.kept_indices.tolist()] + [at + 6272]
    assert positions[at + 1569] == at + 6273


def test_unpruned_pipeline_reproduces_transformers_generate(full_artifacts, bikes):
    """Ratio 1.0 keeps every token: our embeddings + greedy loop must give the very tokens of
    LlavaOnevisionForConditionalGeneration.generate(pixel_values_videos=...)."""
    backend = TransformersBackend(full_artifacts / "model")
    pipeline = Pipeline.from_artifacts(full_artifacts, llm=backend)
    clip = load_video(bikes, 32)
    answer = pipeline.ask(clip, QUESTION, max_new_tokens=12)

    model = backend.model
    video_id = model.config.video_token_index
    ids = pipeline.prompt(QUESTION, np.zeros((0, 64), np.float32), np.zeros(0, np.int64)).input_ids
    at = ids.index(video_id)
    expanded = ids[:at] + [video_id] * (32 * 196 + 1) + ids[at + 1:]
    pixels = torch.from_numpy(preprocess_frames(clip.frames))[None]
    with torch.no_grad():
        reference = model.generate(input_ids=torch.tensor([expanded]), pixel_values_videos=pixels,
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
        for stage in ("decode", "encode", "prune", "prefill", "generation"):
            assert f"  {stage}" in captured.err
    assert "tokens kept  6272 of 6272" in captured.err


def test_streaming_encodes_each_frame_once(pipeline, bikes):
    session = StreamingSession(pipeline)
    calls = []
    encode = pipeline.encode_frame

    def counted(frame):
        calls.append(frame.shape)
        return encode(frame)

    pipeline.encode_frame = counted
    try:
        reached = replay(session, str(bikes), realtime=False, ask_after=1.6)  # frames 0..40 at 25 fps
        answer = session.ask(QUESTION, max_new_tokens=4)
        session.ask("And then?", max_new_tokens=4)
    finally:
        del pipeline.encode_frame
    assert len(calls) == session.frames_encoded == 41 and reached == pytest.approx(1.6)
    assert len(session.window) == 32
    assert answer.timings.tokens_kept == 1568 and answer.note == ""


def push_first_frames(session: StreamingSession, video, count: int) -> list[np.ndarray]:
    """Push the first ``count`` frames of ``video`` into ``session``; returns them."""
    frames = [frame for _, (_, frame) in zip(range(count), iter_frames(str(video)))]
    for frame in frames:
        session.push(frame)
    return frames


def test_streaming_window_holds_the_encoded_frames(pipeline, bikes):
    session = StreamingSession(pipeline)
    frames = push_first_frames(session, bikes, 3)
    tokens, note = session._window_tokens()
    assert tokens.shape == (32, 196, 64) and "only 3 frames so far" in note
    np.testing.assert_array_equal(tokens[0], pipeline.encode_frame(frames[0])[0])
    np.testing.assert_array_equal(tokens[-1], pipeline.encode_frame(frames[2])[0])


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


def test_runtime_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import mmg_runtime.pipeline, mmg_runtime.stream, mmg_runtime.sessions, mmg_runtime.cli\n"
            "import mmg_runtime.llm.trtllm_engine, mmg_runtime.llm.trtllm_llmapi, mmg_runtime.trt_engine\n"
            "print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr


def test_tensorrt_llm_backends_need_a_directory(artifacts, capsys):
    assert main(["run", "--video", "x.mp4", "--prompt", QUESTION, "--artifacts", str(artifacts),
                 "--llm", "trtllm-engine"]) == 1
    assert "--llm trtllm-engine needs --model DIR" in capsys.readouterr().err


def test_tensorrt_llm_missing_is_one_line(artifacts, tmp_path, capsys):
    if __import__("importlib").util.find_spec("tensorrt_llm") is not None:
        pytest.skip("TensorRT-LLM is installed here")
    assert main(["run", "--video", "x.mp4", "--prompt", QUESTION, "--artifacts", str(artifacts),
                 "--llm", "trtllm-api", "--model", str(tmp_path)]) == 1
    assert "TensorRT-LLM is not installed" in capsys.readouterr().err


def test_relative_model_is_resolved_against_the_working_directory(artifacts, bikes, monkeypatch, capsys):
    monkeypatch.chdir(artifacts.parent)
    model = f"{artifacts.name}/model"  # relative to the cwd, not to the artifact directory
    assert main(["run", "--video", str(bikes), "--prompt", QUESTION, "--artifacts", str(artifacts),
                 "--model", model, "--max-new-tokens", "2"]) == 0
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("extra,message", [
    (["--prompt", "  "], "--prompt is empty"),
    (["--prompt", QUESTION, "--keep-positions", "--llm", "trtllm-engine"], "--keep-positions needs --llm transformers"),
    (["--prompt", QUESTION, "--ask-after", "1"], "--ask-after works with --stream only"),
])
def test_bad_run_options_fail_before_any_work(artifacts, capsys, extra, message):
    """Checked before the model loads or the video is decoded (the video does not even exist)."""
    assert main(["run", "--video", "missing.mp4", "--artifacts", str(artifacts), *extra]) == 1
    assert message in capsys.readouterr().err


def test_short_window_repeats_frames_uniformly(pipeline, bikes):
    session = StreamingSession(pipeline)
    frames = push_first_frames(session, bikes, 5)
    tokens, _ = session._window_tokens()
    singles = [pipeline.encode_frame(frame)[0] for frame in frames]
    picks = [i * 5 // 32 for i in range(32)]  # each of the 5 frames 6 or 7 times, in order
    for slot, pick in enumerate(picks):
        np.testing.assert_array_equal(tokens[slot], singles[pick])
