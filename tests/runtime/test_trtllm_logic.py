"""Pure logic of the TensorRT-LLM backends: prompt-table layout, engine config, LLM API request."""
import inspect
import json

import numpy as np
import pytest

from mmg_runtime.errors import UserError
from mmg_runtime.llm.base import GREEDY, Sampling, VideoPrompt
from mmg_runtime.llm.prompt_table import (
    EngineLimits,
    build_engine_prompt,
    expand_placeholder,
    fake_prompt_ids,
)
from mmg_runtime.llm.trtllm_engine import (
    check_generation_fits,
    load_engine_limits,
    new_tokens,
    parse_engine_config,
    resolve_special_ids,
    table_to_torch,
)
from mmg_runtime.llm.trtllm_llmapi import (
    ADAPTER_ARCHITECTURE,
    ADAPTER_MODEL_TYPE,
    adapter_config,
    build_llmapi_request,
    check_llmapi_prompt,
    expand_video_placeholder,
    read_adapter_config,
)

TRTLLM_REASON = "TensorRT-LLM is not installable in this workplace (NVIDIA index only)"
VIDEO = 99
HIDDEN = 8


def limits(**overrides) -> EngineLimits:
    values = dict(vocab_size=10, hidden_size=HIDDEN, dtype="float16", max_multimodal_len=16,
                  max_input_len=32, max_seq_len=64, max_num_tokens=48)
    return EngineLimits(**{**values, **overrides})


def video_prompt(ids=(1, 2, VIDEO, 3), m=4, hidden=HIDDEN, positions=None) -> VideoPrompt:
    embeds = np.arange(m * hidden, dtype=np.float32).reshape(m, hidden) / 7
    return VideoPrompt(list(ids), VIDEO, embeds, positions)


# A trimmed config.json as trtllm-build 0.17 writes it for a Qwen2 LLM engine.
ENGINE_CONFIG = {
    "version": "0.17.0.post1",
    "pretrained_config": {
        "architecture": "Qwen2ForCausalLM",
        "dtype": "bfloat16",
        "vocab_size": 152128,
        "hidden_size": 3584,
        "num_hidden_layers": 28,
        "mapping": {"world_size": 1, "tp_size": 1, "pp_size": 1},
        "qwen_type": "qwen2",
    },
    "build_config": {
        "max_input_len": 13000,
        "max_seq_len": 14000,
        "max_batch_size": 1,
        "max_beam_width": 1,
        "max_num_tokens": 16384,
        "max_prompt_embedding_table_size": 12800,
        "plugin_config": {"remove_input_padding": True, "paged_kv_cache": True},
    },
}


# --- prompt table (legacy engine path) ---------------------------------------------------------

def test_fake_ids_replace_the_placeholder():
    ids = expand_placeholder(video_prompt(), vocab_size=10)
    assert ids.tolist() == [1, 2, 10, 11, 12, 13, 3]
    assert ids.dtype == np.int32
    assert fake_prompt_ids(152128, 3).tolist() == [152128, 152129, 152130]


@pytest.mark.parametrize("ids,expected", [((VIDEO, 5), [10, 11, 12, 13, 5]),
                                          ((5, VIDEO), [5, 10, 11, 12, 13])])
def test_placeholder_at_either_end(ids, expected):
    assert expand_placeholder(video_prompt(ids), 10).tolist() == expected


@pytest.mark.parametrize("dtype,np_dtype", [("float16", np.float16), ("bfloat16", np.float32),
                                            ("float32", np.float32)])
def test_engine_prompt_layout(dtype, np_dtype):
    prompt = video_prompt()
    engine_prompt = build_engine_prompt(prompt, limits(dtype=dtype))
    assert engine_prompt.input_ids.tolist() == [1, 2, 10, 11, 12, 13, 3]
    assert engine_prompt.prompt_table.shape == (1, 4, HIDDEN)
    assert engine_prompt.prompt_table.dtype == np_dtype
    np.testing.assert_allclose(engine_prompt.prompt_table[0], prompt.video_embeds, rtol=1e-3)
    assert engine_prompt.prompt_tasks == "0"
    assert engine_prompt.input_lengths.tolist() == [7]
    assert engine_prompt.input_lengths.dtype == np.int32


def test_too_many_video_tokens_names_both_numbers():
    message = r"20 video tokens exceed the engine's max_multimodal_len 16"
    with pytest.raises(ValueError, match=message):
        build_engine_prompt(video_prompt(m=20), limits())


def test_engine_without_prompt_table():
    with pytest.raises(ValueError, match="--max_multimodal_len"):
        build_engine_prompt(video_prompt(), limits(max_multimodal_len=0))


def test_wrong_hidden_size_names_both_numbers():
    with pytest.raises(ValueError, match=r"hidden size 6 does not match the engine hidden size 8"):
        build_engine_prompt(video_prompt(hidden=6), limits())


def test_prompt_longer_than_max_input_len():
    message = r"17 tokens \(14 video \+ 3 text\) exceed the engine's max_input_len 16"
    with pytest.raises(ValueError, match=message):
        build_engine_prompt(video_prompt(m=14), limits(max_input_len=16))


@pytest.mark.parametrize("ids,found", [((1, 2, 3), 0), ((1, VIDEO, VIDEO), 2)])
def test_placeholder_count_must_be_one(ids, found):
    message = f"exactly one video placeholder id {VIDEO}, found {found}"
    with pytest.raises(ValueError, match=message):
        build_engine_prompt(video_prompt(ids), limits())


def test_empty_video_is_rejected():
    with pytest.raises(ValueError, match="non-empty"):
        build_engine_prompt(video_prompt(m=0), limits())


def test_kept_token_positions_are_unsupported():
    prompt = video_prompt(positions=np.array([0, 5, 9, 12]))
    with pytest.raises(ValueError, match="unsupported on the TensorRT-LLM engine backend"):
        build_engine_prompt(prompt, limits())


def test_contiguous_positions_are_the_default_layout():
    prompt = video_prompt(positions=np.arange(4))
    assert build_engine_prompt(prompt, limits()).input_ids.tolist() == [1, 2, 10, 11, 12, 13, 3]


# --- engine config and runner glue -------------------------------------------------------------

def test_parse_engine_config():
    assert parse_engine_config(ENGINE_CONFIG) == EngineLimits(
        vocab_size=152128, hidden_size=3584, dtype="bfloat16", max_multimodal_len=12800,
        max_input_len=13000, max_seq_len=14000, max_num_tokens=16384)


def test_engine_config_without_prompt_table_reads_zero():
    config = json.loads(json.dumps(ENGINE_CONFIG))
    del config["build_config"]["max_prompt_embedding_table_size"]
    assert parse_engine_config(config).max_multimodal_len == 0


def test_engine_config_missing_key_is_named():
    config = json.loads(json.dumps(ENGINE_CONFIG))
    del config["build_config"]["max_seq_len"]
    with pytest.raises(ValueError, match=r"missing build_config\.max_seq_len"):
        parse_engine_config(config)


def test_engine_config_rejects_unknown_dtype_and_multi_gpu():
    config = json.loads(json.dumps(ENGINE_CONFIG))
    config["pretrained_config"]["dtype"] = "int8"
    with pytest.raises(ValueError, match="dtype 'int8'"):
        parse_engine_config(config)
    config = json.loads(json.dumps(ENGINE_CONFIG))
    config["pretrained_config"]["mapping"]["world_size"] = 2
    with pytest.raises(ValueError, match="split over 2 GPUs"):
        parse_engine_config(config)


def test_load_engine_limits(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(ENGINE_CONFIG))
    assert load_engine_limits(tmp_path).max_multimodal_len == 12800
    with pytest.raises(ValueError, match="not found"):
        load_engine_limits(tmp_path / "missing")


def test_generation_must_fit_the_engine():
    check_generation_fits(40, 24, limits(), chunked_context=False)
    with pytest.raises(ValueError, match=r"40 tokens \+ 25 new tokens exceed .* max_seq_len 64"):
        check_generation_fits(40, 25, limits(), chunked_context=False)
    with pytest.raises(ValueError, match="max_num_tokens 48"):
        check_generation_fits(50, 4, limits(max_seq_len=100), chunked_context=False)
    check_generation_fits(50, 4, limits(max_seq_len=100), chunked_context=True)
    with pytest.raises(ValueError, match="at least 1"):
        check_generation_fits(4, 0, limits(), chunked_context=False)


def test_new_tokens_drop_prompt_and_padding():
    assert new_tokens([1, 2, 10, 11, 7, 8, 0, 0], input_length=4, sequence_length=6) == [7, 8]


def test_special_ids():
    assert resolve_special_ids(151645, None, None) == (151645, 151645)
    assert resolve_special_ids(151645, 151643, None) == (151645, 151643)
    with pytest.raises(ValueError, match="end_id or tokenizer_dir"):
        resolve_special_ids(None, None, None)


def test_table_to_torch_uses_the_engine_dtype():
    torch = pytest.importorskip("torch", reason="torch is needed only at call time")
    table = build_engine_prompt(video_prompt(), limits(dtype="bfloat16")).prompt_table
    tensor = table_to_torch(table, "bfloat16")
    assert tensor.dtype == torch.bfloat16 and tuple(tensor.shape) == (1, 4, HIDDEN)


# --- LLM API (TensorRT-LLM 1.x) ----------------------------------------------------------------

def test_llmapi_request_dict():
    prompt = video_prompt()
    request = build_llmapi_request(prompt, "text", prompt.video_embeds)
    assert set(request) == {"prompt", "multi_modal_embeddings", "mm_processor_kwargs"}
    assert request["prompt"] == "text"
    (embedding,) = request["multi_modal_embeddings"]["video"]
    assert embedding.shape == (4, HIDDEN)
    assert request["mm_processor_kwargs"] == {"prompt_token_ids": [1, 2, VIDEO, 3],
                                              "video_token_id": VIDEO}


def test_video_placeholder_expands_in_vocab():
    expanded = expand_video_placeholder([1, 2, VIDEO, 3], VIDEO, 4)
    assert expanded == [1, 2, VIDEO, VIDEO, VIDEO, VIDEO, 3]
    with pytest.raises(ValueError, match="found 2"):
        expand_video_placeholder([VIDEO, VIDEO], VIDEO, 4)


def test_adapter_config_round_trip():
    qwen2 = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584}
    config = adapter_config(qwen2, 151647)
    assert config["architectures"] == [ADAPTER_ARCHITECTURE] and config["model_type"] == "qwen2"
    assert qwen2["architectures"] == ["Qwen2ForCausalLM"]
    assert read_adapter_config(config) == (3584, 151647)
    with pytest.raises(ValueError, match="adapter_config"):
        read_adapter_config(qwen2)


def test_llmapi_prompt_checks():
    check_llmapi_prompt(video_prompt(), HIDDEN)
    with pytest.raises(ValueError, match="hidden size 6 does not match the model hidden size 8"):
        check_llmapi_prompt(video_prompt(hidden=6), HIDDEN)
    with pytest.raises(ValueError, match="unsupported on the TensorRT-LLM LLM API backend"):
        check_llmapi_prompt(video_prompt(positions=np.array([0, 2, 4, 6])), HIDDEN)
    with pytest.raises(ValueError, match="found 0"):
        check_llmapi_prompt(video_prompt((1, 2)), HIDDEN)


# --- API facts, checked where TensorRT-LLM is installed ----------------------------------------

def test_runner_signatures_take_a_prompt_table():
    runtime = pytest.importorskip("tensorrt_llm.runtime", reason=TRTLLM_REASON)
    generate = inspect.signature(runtime.ModelRunnerCpp.generate).parameters
    assert {"prompt_table", "prompt_tasks", "streaming", "return_dict"} <= set(generate)
    from_dir = inspect.signature(runtime.ModelRunnerCpp.from_dir).parameters
    assert {"kv_cache_free_gpu_memory_fraction", "enable_chunked_context"} <= set(from_dir)
    python_generate = inspect.signature(runtime.ModelRunner.generate).parameters
    assert {"prompt_table", "prompt_tasks", "streaming"} <= set(python_generate)


def test_adapter_registers_with_tensorrt_llm():
    pytest.importorskip("tensorrt_llm", reason=TRTLLM_REASON)
    from tensorrt_llm.inputs.registry import MULTIMODAL_PLACEHOLDER_REGISTRY

    from mmg_runtime.llm.trtllm_llmapi import register_adapter

    register_adapter()
    assert MULTIMODAL_PLACEHOLDER_REGISTRY.get_placeholder(ADAPTER_MODEL_TYPE, "video") == "<video>"


# --- generate() against stand-ins that check the documented names and outputs --------------------


@pytest.fixture
def trtllm(monkeypatch):
    pytest.importorskip("torch", reason="both TensorRT-LLM backends hand torch tensors to TensorRT-LLM")
    import trtllm_standin

    from mmg_runtime.llm import trtllm_llmapi

    monkeypatch.setattr(trtllm_llmapi, "_registered", False)  # each stand-in starts with empty registries
    return trtllm_standin.install(monkeypatch)


def small_engine_dir(tmp_path, dtype="float16"):
    config = json.loads(json.dumps(ENGINE_CONFIG))
    config["pretrained_config"].update(vocab_size=10, hidden_size=HIDDEN, dtype=dtype)
    config["build_config"].update(max_input_len=32, max_seq_len=64, max_num_tokens=48,
                                  max_prompt_embedding_table_size=16)
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


@pytest.mark.parametrize("session,runner", [("cpp", "ModelRunnerCpp"), ("python", "ModelRunner")])
def test_engine_backend_generate(trtllm, tmp_path, session, runner):
    import torch

    from mmg_runtime.llm.trtllm_engine import TrtLlmEngineBackend

    backend = TrtLlmEngineBackend(small_engine_dir(tmp_path, "bfloat16"), end_id=2, session=session)
    assert trtllm.from_dir["class"] == runner and trtllm.from_dir["engine_dir"] == str(tmp_path)
    prompt = video_prompt()
    generation = backend.generate(prompt, max_new_tokens=2)
    assert generation.token_ids == [7, 8]  # the new tokens only: prompt and end_id padding dropped
    call = trtllm.generate
    assert call["batch_input_ids"] == [[1, 2, 10, 11, 12, 13, 3]]  # fake ids vocab_size.. for the video
    assert call["prompt_table"].dtype == torch.bfloat16 and tuple(call["prompt_table"].shape) == (1, 4, HIDDEN)
    np.testing.assert_allclose(call["prompt_table"][0].float().numpy(), prompt.video_embeds, rtol=1e-2)
    assert (call["prompt_tasks"], call["max_new_tokens"], call["end_id"], call["pad_id"], call["top_k"]) == (
        "0", 2, 2, 2, 1)
    assert generation.extra == {"session": session, "input_length": 7, "video_tokens": 4}
    assert generation.prefill_s >= 0 and generation.decode_s >= 0


def adapter_model_dir(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(adapter_config({"hidden_size": HIDDEN}, VIDEO)))
    return tmp_path


def test_llmapi_backend_registers_the_adapter_before_building_the_llm(trtllm, tmp_path):
    """LLM(...) resolves the model's architecture and input processor when built: registering later fails."""
    import trtllm_standin

    from mmg_runtime.llm.trtllm_llmapi import TrtLlmApiBackend

    with pytest.raises(ValueError, match=f"Unknown architecture for AutoModelForCausalLM: {ADAPTER_ARCHITECTURE}"):
        trtllm_standin.LLM(model=str(adapter_model_dir(tmp_path)))
    backend = TrtLlmApiBackend(tmp_path)
    assert isinstance(backend._llm.input_processor, trtllm.registered["processor"])


def test_llmapi_backend_generate(trtllm, tmp_path):
    import torch

    from mmg_runtime.llm import trtllm_llmapi

    backend = trtllm_llmapi.TrtLlmApiBackend(adapter_model_dir(tmp_path), max_seq_len=128, max_num_tokens=96)
    assert trtllm.registered["architecture"] == ADAPTER_ARCHITECTURE
    assert (trtllm.registered["model_type"], trtllm.registered["placeholders"]) == (ADAPTER_MODEL_TYPE,
                                                                                    {"video": "<video>"})
    llm = trtllm.llm
    assert (llm["model"], llm["max_batch_size"], llm["max_seq_len"], llm["max_num_tokens"]) == (str(tmp_path), 1, 128, 96)
    assert llm["kv_cache_config"].enable_block_reuse is False  # requests differing only in video share ids

    prompt = video_prompt()
    generation = backend.generate(prompt, max_new_tokens=2)
    assert generation.token_ids == [7, 8]
    ids, extra, params, streaming = trtllm.attached
    assert ids == [1, 2, VIDEO, VIDEO, VIDEO, VIDEO, 3]  # the placeholder expanded to M video ids
    embedding = extra["multimodal_data"]["multimodal_embedding"]
    assert isinstance(embedding, torch.Tensor) and tuple(embedding.shape) == (4, HIDDEN)
    assert (params.max_tokens, params.top_k, streaming) == (2, 1, True)

    # the adapter model puts the attached embeddings where the video ids are
    model = trtllm.registered["model"](HIDDEN, VIDEO)
    metadata = type("AttentionMetadata", (), {"num_contexts": 1})()
    params_in = type("MultimodalParams", (), {"multimodal_data": {"multimodal_embedding": embedding}})()
    model.forward(metadata, input_ids=torch.tensor(ids), multimodal_params=[params_in])
    fused = trtllm.forward["inputs_embeds"]
    torch.testing.assert_close(fused[2:6], embedding.to(fused.dtype))
    torch.testing.assert_close(fused[0], model.model.embed_tokens.weight[1])


# --- sampling, stop and KV block reuse on both paths ---------------------------------------------

SAMPLED = Sampling(temperature=0.7, top_p=0.9, top_k=40, seed=11, repetition_penalty=1.1)


def test_engine_sampling_keywords():
    from mmg_runtime.llm.trtllm_engine import engine_sampling

    assert engine_sampling(GREEDY) == {"top_k": 1}
    assert engine_sampling(Sampling(repetition_penalty=1.2)) == {"top_k": 1, "repetition_penalty": 1.2}
    assert engine_sampling(SAMPLED) == {"temperature": 0.7, "top_k": 40, "top_p": 0.9, "random_seed": 11,
                                        "repetition_penalty": 1.1}
    unseeded = [engine_sampling(Sampling(temperature=1.0))["random_seed"] for _ in range(2)]
    assert unseeded[0] != unseeded[1] and all(0 <= seed < 2**63 for seed in unseeded)  # not the runtime's 0


def test_llmapi_sampling_keywords():
    from mmg_runtime.llm.trtllm_llmapi import llmapi_sampling

    assert llmapi_sampling(GREEDY) == {"top_k": 1}
    assert llmapi_sampling(SAMPLED) == {"temperature": 0.7, "top_k": 40, "top_p": 0.9, "seed": 11,
                                        "repetition_penalty": 1.1}
    assert llmapi_sampling(Sampling(temperature=1.0, seed=3)) == {"temperature": 1.0, "top_k": None, "top_p": 1.0,
                                                                  "seed": 3}


@pytest.mark.parametrize("penalty", ["frequency_penalty", "presence_penalty"])
def test_output_only_penalties_are_refused_on_tensorrt_llm(penalty):
    """TensorRT-LLM's penalty kernels count the prompt too: OpenAI's answer-only penalties are refused."""
    from mmg_runtime.llm.trtllm_engine import engine_sampling
    from mmg_runtime.llm.trtllm_llmapi import llmapi_sampling

    for sampling_keywords, backend in ((engine_sampling, "trtllm-engine"), (llmapi_sampling, "trtllm-api")):
        with pytest.raises(UserError) as refused:
            sampling_keywords(Sampling(temperature=1.0, **{penalty: 0.5}))
        assert str(refused.value) == (f"{penalty}: --llm {backend} would count the prompt's tokens too, not only "
                                      "the answer's as OpenAI does; leave it at 0 or use --llm transformers")


def test_token_extra_ids_tell_videos_apart():
    from mmg_runtime.cache import VideoKey
    from mmg_runtime.llm.trtllm_engine import token_extra_ids

    ids = np.array([1, 2, 10, 11, 12, 13, 3], dtype=np.int32)
    first = token_extra_ids(ids, 10, (VideoKey("a", "clip-1", "plan"),))
    assert first[:2] == [0, 0] and first[-1] == 0 and len(set(first[2:6])) == 1 and 0 < first[2] < 2**63
    assert token_extra_ids(ids, 10, (VideoKey("a", "clip-1", "plan"),)) == first
    assert token_extra_ids(ids, 10, (VideoKey("a", "clip-2", "plan"),))[2] != first[2]
    assert token_extra_ids(ids, 10, None)[2] != token_extra_ids(ids, 10, None)[2]  # no key: never shared


def test_standins_refuse_what_tensorrt_llm_does_not_define(trtllm):
    import torch
    import trtllm_standin

    with pytest.raises(TypeError, match="random_seed"):
        trtllm_standin.SamplingParams(random_seed=1)  # the LLM API calls it seed
    runner = trtllm_standin.ModelRunnerCpp.from_dir("engine")
    with pytest.raises(AssertionError, match="'seed'"):  # ModelRunnerCpp would drop it without a word
        runner.generate([torch.tensor([1])], prompt_table=torch.zeros(1, 1, 2), prompt_tasks="0", seed=1)
    with pytest.raises(AssertionError, match="input_token_extra_ids"):
        trtllm_standin.ModelRunner.from_dir("engine").generate(
            [torch.tensor([1])], prompt_table=torch.zeros(1, 1, 2), prompt_tasks="0", input_token_extra_ids=[[0]])


def stop_at(count: int, seen: list[int]):
    def on_token(token: int) -> bool:
        seen.append(token)
        return len(seen) == count
    return on_token


@pytest.mark.parametrize("session", ["cpp", "python"])
def test_engine_backend_samples_and_stops(trtllm, tmp_path, session):
    from mmg_runtime.llm.trtllm_engine import TrtLlmEngineBackend

    backend = TrtLlmEngineBackend(small_engine_dir(tmp_path), end_id=2, session=session)
    seen: list[int] = []
    generation = backend.generate(video_prompt(), max_new_tokens=3, on_token=stop_at(2, seen), sampling=SAMPLED)
    assert generation.token_ids == [7, 8] == seen and generation.stopped
    assert trtllm.drained  # read to its end: a request left in the executor would answer the next call
    call = trtllm.generate
    assert (call["temperature"], call["top_k"], call["top_p"], call["random_seed"]) == (0.7, 40, 0.9, 11)
    assert "input_token_extra_ids" not in call and generation.cached_tokens == 0
    assert backend.generate(video_prompt(), max_new_tokens=3).stopped is False


def test_engine_backend_block_reuse(trtllm, tmp_path):
    from mmg_runtime.cache import VideoKey
    from mmg_runtime.llm.trtllm_engine import TrtLlmEngineBackend

    backend = TrtLlmEngineBackend(small_engine_dir(tmp_path), end_id=2, enable_block_reuse=True)
    assert trtllm.from_dir["kv_cache_enable_block_reuse"] is True
    prompt = video_prompt()
    keyed = VideoPrompt(prompt.input_ids, VIDEO, prompt.video_embeds, video_key=(VideoKey("a", "c", "p"),))
    backend.generate(keyed, max_new_tokens=2)
    (extra,) = trtllm.generate["input_token_extra_ids"]
    assert len(extra) == 7 and extra[:2] == [0, 0] and extra[-1] == 0 and extra[2] == extra[5] > 0
    with pytest.raises(ValueError, match="need session='cpp'"):
        TrtLlmEngineBackend(small_engine_dir(tmp_path), end_id=2, session="python", enable_block_reuse=True)


def test_llmapi_backend_samples_and_aborts_on_stop(trtllm, tmp_path):
    from mmg_runtime.llm.trtllm_llmapi import TrtLlmApiBackend

    backend = TrtLlmApiBackend(adapter_model_dir(tmp_path))
    seen: list[int] = []
    generation = backend.generate(video_prompt(), max_new_tokens=3, on_token=stop_at(1, seen), sampling=SAMPLED)
    assert generation.token_ids == [7] == seen and generation.stopped and trtllm.aborted
    params = trtllm.attached[2]
    assert (params.temperature, params.top_k, params.top_p, params.seed, params.repetition_penalty) == (
        0.7, 40, 0.9, 11, 1.1)
