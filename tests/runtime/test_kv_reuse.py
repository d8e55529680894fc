"""KV prefix reuse in the transformers backend, with the built-in tiny model: a reused prefix answers
as a cold run does, counts its cached tokens, never writes what it shares, and the store keeps to
its budget."""
import numpy as np
import pytest
import torch

from mmg_runtime.cache import CacheStore, VideoKey
from mmg_runtime.llm.base import VideoPrompt
from mmg_runtime.llm.kv_prefix import KV_GROUP, KvPrefix, common_length, expanded_ids

VIDEO_TOKENS = 24
LAYERS, KV_HEADS, HEAD_DIM, FLOAT32 = 2, 2, 16, 4  # the tiny model's Qwen2: 64 wide, 4 heads, 2 KV heads


def key(content: str = "clip", namespace: str = "") -> tuple:
    return (VideoKey("artifacts-digest", content, ("frames", 32), namespace),)


def chat(tokenizer, turns: list[str], answers: list[list[int]] = (), video_key=None, positions=None,
         seed: int = 0) -> VideoPrompt:
    """A ChatML prompt: the video and the first question, then each earlier answer (as generated ids)
    and the next question."""
    video = tokenizer.convert_tokens_to_ids("<video>")
    encode = lambda text: tokenizer(text)["input_ids"]
    ids = encode("<|im_start|>user\n") + [video] + encode(f"{turns[0]}<|im_end|>\n<|im_start|>assistant\n")
    for answer, turn in zip(answers, turns[1:]):
        ids += answer + encode(f"<|im_end|>\n<|im_start|>user\n{turn}<|im_end|>\n<|im_start|>assistant\n")
    embeds = np.random.default_rng(seed).standard_normal((VIDEO_TOKENS, 64)).astype(np.float32)
    return VideoPrompt(ids, video, embeds, positions, video_key)


class LogitsRecorder:
    """A forward hook on the model keeping the last position's logits of every call."""

    def __init__(self, model) -> None:
        self.logits: list[torch.Tensor] = []
        self.handle = model.register_forward_hook(lambda module, args, output: self.logits.append(output.logits[0, -1]))

    def take(self) -> list[torch.Tensor]:
        taken, self.logits = self.logits, []
        return taken


def kv_bytes(tokens: int) -> int:
    return LAYERS * 2 * KV_HEADS * tokens * HEAD_DIM * FLOAT32


KEPT = np.array([0, 3, 4, 9, 12, 13, 17, 21, 22, 30, 31, 33, 40, 41, 47, 50, 52, 60, 61, 70, 71, 80, 90, 96])


@pytest.mark.parametrize("positions", [None, KEPT], ids=["contiguous", "keep_positions"])
def test_a_follow_up_prefills_only_its_new_tokens_and_answers_as_a_cold_run(tiny_llm, positions):
    backend, tokenizer = tiny_llm
    cache = CacheStore(1 << 30)
    recorder = LogitsRecorder(backend.model)
    try:
        first = chat(tokenizer, ["What happens?"], video_key=key(), positions=positions)
        answer = backend.generate(first, 8, cache=cache)
        assert answer.cached_tokens == 0 and len(answer.token_ids) == 8
        stored = len(expanded_ids(first)) + 7  # the prompt and the answer less its last token
        assert cache.nbytes == kv_bytes(stored) and len(cache) == 1

        turns = ["What happens?", "And then?"]
        follow_up = chat(tokenizer, turns, [answer.token_ids], video_key=key(), positions=positions)
        recorder.take()
        warm = backend.generate(follow_up, 8, cache=cache)
        warm_logits = recorder.take()
        cold = backend.generate(chat(tokenizer, turns, [answer.token_ids], positions=positions), 8)
        cold_logits = recorder.take()
    finally:
        recorder.handle.remove()
    assert warm.cached_tokens == stored and cold.cached_tokens == 0
    assert warm.token_ids == cold.token_ids
    for warm_step, cold_step in zip(warm_logits, cold_logits, strict=True):
        torch.testing.assert_close(warm_step, cold_step, rtol=1e-4, atol=1e-4)
    (_, entry), = cache.items((KV_GROUP, key()))  # the follow-up's entry replaced the one it extends
    assert len(entry.ids) == len(expanded_ids(follow_up)) + len(warm.token_ids) - 1
    assert cache.nbytes == kv_bytes(len(entry.ids))


def test_the_same_question_again_prefills_its_last_token_only(tiny_llm):
    backend, tokenizer = tiny_llm
    cache = CacheStore(1 << 30)
    prompt = chat(tokenizer, ["What happens?"], video_key=key())
    cold = backend.generate(prompt, 6, cache=cache)
    again = backend.generate(prompt, 6, cache=cache)
    assert again.cached_tokens == len(expanded_ids(prompt)) - 1 and again.token_ids == cold.token_ids


def test_stored_tensors_are_shared_and_never_written(tiny_llm):
    backend, tokenizer = tiny_llm
    cache = CacheStore(1 << 30)
    first = chat(tokenizer, ["What happens?"], video_key=key())
    backend.generate(first, 4, cache=cache)
    (_, entry), = cache.items((KV_GROUP, key()))
    before = [(keys.clone(), values.clone()) for keys, values in entry.layers]
    other_question = chat(tokenizer, ["Who is there?"], video_key=key())  # shares the prefix up to the question
    reused = backend.generate(other_question, 4, cache=cache)
    assert 0 < reused.cached_tokens < len(expanded_ids(other_question))
    for (keys, values), (keys_before, values_before) in zip(entry.layers, before, strict=True):
        assert torch.equal(keys, keys_before) and torch.equal(values, values_before)
    assert len(cache.items((KV_GROUP, key()))) == 2  # a branch does not extend the first entry: both kept


def test_nothing_is_reused_across_videos_namespaces_or_without_a_key(tiny_llm):
    backend, tokenizer = tiny_llm
    cache = CacheStore(1 << 30)
    backend.generate(chat(tokenizer, ["What happens?"], video_key=key()), 4, cache=cache)
    for prompt in (chat(tokenizer, ["What happens?"], video_key=key(namespace="another api key")),
                   chat(tokenizer, ["What happens?"], video_key=key("another clip"), seed=1)):
        assert backend.generate(prompt, 4, cache=cache).cached_tokens == 0
    kept = len(cache)
    assert backend.generate(chat(tokenizer, ["What happens?"]), 4, cache=cache).cached_tokens == 0
    assert len(cache) == kept  # no key: nothing kept either


def test_eviction_keeps_the_store_within_its_budget(tiny_llm):
    backend, tokenizer = tiny_llm
    prompt = chat(tokenizer, ["What happens?"], video_key=key("clip-1"))
    one_entry = kv_bytes(len(expanded_ids(prompt)) + 3)
    cache = CacheStore(one_entry + one_entry // 2)
    backend.generate(prompt, 4, cache=cache)
    assert cache.nbytes == one_entry
    backend.generate(chat(tokenizer, ["What happens?"], video_key=key("clip-2"), seed=1), 4, cache=cache)
    assert len(cache) == 1 and cache.nbytes == one_entry <= cache.budget_bytes
    assert cache.items((KV_GROUP, key("clip-1"))) == []  # the least recently used went
    assert backend.generate(prompt, 4, cache=cache).cached_tokens == 0
    tiny_store = CacheStore(one_entry - 1)
    backend.generate(prompt, 4, cache=tiny_store)
    assert len(tiny_store) == 0 and tiny_store.nbytes == 0  # larger than the whole budget: not kept


def test_common_length_compares_ids_and_positions():
    entry = KvPrefix("owner", np.array([1, 2, 3, 4]), np.array([0, 1, 5, 6]), layers=())
    assert common_length(np.array([1, 2, 3, 4, 5]), np.array([0, 1, 5, 6, 7]), entry) == 4
    assert common_length(np.array([1, 2, 3]), np.array([0, 1, 2]), entry) == 2  # same ids, other positions
    assert common_length(np.array([9, 2]), np.array([0, 1]), entry) == 0
