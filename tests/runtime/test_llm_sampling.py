"""Sampling: the Sampling fields' checks, the logits processors on hand-made logits, and the
transformers backend with the built-in tiny model (seeds, top_k=1, penalties, stop callback)."""
import numpy as np
import pytest
import torch

from mmg_runtime.errors import UserError
from mmg_runtime.llm.base import GREEDY, Sampling, VideoPrompt
from mmg_runtime.llm.torch_sampling import (
    OutputPenalty,
    TokenChooser,
    logits_processors,
)

# --- the Sampling fields -----------------------------------------------------------------------


@pytest.mark.parametrize("field,value,expected", [
    ("temperature", -1, "temperature=-1: expected a number from 0 (greedy) to 2"),
    ("temperature", 2.5, "temperature=2.5: expected a number from 0 (greedy) to 2"),
    ("temperature", "hot", "temperature='hot': expected a number"),
    ("temperature", float("nan"), "temperature=nan: expected a number"),
    ("top_p", 0, "top_p=0: expected a number above 0, at most 1"),
    ("top_p", 1.5, "top_p=1.5: expected a number above 0, at most 1"),
    ("top_k", -1, "top_k=-1: expected 0 (off) or a positive integer"),
    ("top_k", 2.0, "top_k=2.0: expected 0 (off) or a positive integer"),
    ("top_k", True, "top_k=True: expected 0 (off) or a positive integer"),
    ("seed", -3, "seed=-3: expected an integer from 0 to 2**63 - 1, or none"),
    ("seed", "7", "seed='7': expected an integer"),
    ("repetition_penalty", 0, "repetition_penalty=0: expected a number above 0 (1 = off)"),
    ("frequency_penalty", 2.1, "frequency_penalty=2.1: expected a number from -2 to 2"),
    ("presence_penalty", -3, "presence_penalty=-3: expected a number from -2 to 2"),
])
def test_bad_sampling_values_give_one_clear_line(field, value, expected):
    with pytest.raises(UserError) as error:
        Sampling(**{field: value})
    assert str(error.value).startswith(expected) and "\n" not in str(error.value)


def test_greedy_is_the_default():
    assert GREEDY == Sampling() and GREEDY.greedy and GREEDY.penalties() == {}
    sampled = Sampling(temperature=0.8, top_p=0.95, top_k=50, seed=1, repetition_penalty=1.05,
                       frequency_penalty=-2, presence_penalty=2)
    assert not sampled.greedy and sampled.penalties() == {
        "repetition_penalty": 1.05, "frequency_penalty": -2.0, "presence_penalty": 2.0}
    assert Sampling(presence_penalty=0.5).penalties() == {"presence_penalty": 0.5}
    assert logits_processors(GREEDY, 3) == []


# --- the processors on hand-made logits ----------------------------------------------------------


def scores_after(sampling: Sampling, prompt: list[int], output: list[int], logits: list[float]) -> list[float]:
    chooser = TokenChooser(sampling, prompt, "cpu")
    if chooser.ids is not None:
        chooser.ids = torch.tensor([prompt + output])
    return chooser.scores(torch.tensor(logits)).squeeze(0).tolist()


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_of_seen_tokens():
    # tokens 0 (prompt) and 1 (output) seen: 2 -> 2 / 2, -2 -> -2 * 2; unseen tokens unchanged
    assert scores_after(Sampling(repetition_penalty=2.0), [0], [1], [2, -2, 1, 0.5]) == [1, -4, 1, 0.5]


def test_frequency_and_presence_penalties_count_output_tokens_only():
    # prompt [3]; output [0, 0, 2]: token 0 twice, token 2 once, token 3 only in the prompt
    sampling = Sampling(frequency_penalty=0.5, presence_penalty=1.0)
    assert scores_after(sampling, [3], [0, 0, 2], [4, 4, 4, 4]) == [4 - 2 * 0.5 - 1, 4, 4 - 0.5 - 1, 4]
    penalty = OutputPenalty(frequency=-1.0, presence=0.0, prompt_length=1)  # negative: encourages repeats
    assert penalty(torch.tensor([[3, 1, 1]]), torch.zeros(1, 4)).tolist() == [[0, 2, 0, 0]]


def test_temperature_top_k_and_top_p_filter_as_defined():
    logits = torch.tensor([1.0, 3.0, 2.0, 0.0])
    assert scores_after(Sampling(temperature=0.5), [], [], logits.tolist()) == [2, 6, 4, 0]
    top_two = scores_after(Sampling(temperature=1.0, top_k=2), [], [], logits.tolist())
    assert top_two[1:3] == [3, 2] and top_two[0] == top_two[3] == float("-inf")
    probabilities = torch.tensor([0.5, 0.3, 0.2]).log().tolist()  # the smallest set reaching 0.6: 0.5 + 0.3
    nucleus = scores_after(Sampling(temperature=1.0, top_p=0.6), [], [], probabilities)
    assert np.isfinite(nucleus[:2]).all() and nucleus[2] == float("-inf")


def test_top_k_1_and_temperature_0_pick_the_argmax_after_penalties():
    generator = torch.Generator().manual_seed(0)
    for seed in range(20):
        logits = torch.randn(50, generator=generator)
        assert TokenChooser(Sampling(temperature=1.5, top_k=1, seed=seed), [1], "cpu")(logits) == int(logits.argmax())
    logits = torch.tensor([5.0, 4.0, 0.0])
    assert TokenChooser(GREEDY, [0], "cpu")(logits) == 0
    assert TokenChooser(Sampling(repetition_penalty=2.0), [0], "cpu")(logits) == 1  # 5 / 2 < 4


# --- the transformers backend with the tiny model -------------------------------------------------


def question(tokenizer, text: str = "What happens?", video_tokens: int = 24, seed: int = 0) -> VideoPrompt:
    video = tokenizer.convert_tokens_to_ids("<video>")
    ids = (tokenizer("<|im_start|>user\n")["input_ids"] + [video]
           + tokenizer(f"{text}<|im_end|>\n<|im_start|>assistant\n")["input_ids"])
    embeds = np.random.default_rng(seed).standard_normal((video_tokens, 64)).astype(np.float32)
    return VideoPrompt(ids, video, embeds)


def test_a_seed_gives_one_answer_and_two_seeds_two(tiny_llm):
    backend, tokenizer = tiny_llm
    prompt = question(tokenizer)
    first = backend.generate(prompt, 12, sampling=Sampling(temperature=1.0, seed=1)).token_ids
    assert backend.generate(prompt, 12, sampling=Sampling(temperature=1.0, seed=1)).token_ids == first
    assert backend.generate(prompt, 12, sampling=Sampling(temperature=1.0, seed=2)).token_ids != first
    greedy = backend.generate(prompt, 12).token_ids
    assert first != greedy  # at temperature 1 the tiny model's flat distribution is really sampled


def test_top_k_1_answers_as_greedy(tiny_llm):
    backend, tokenizer = tiny_llm
    prompt = question(tokenizer)
    greedy = backend.generate(prompt, 12, sampling=Sampling(temperature=0.0, seed=5)).token_ids
    assert backend.generate(prompt, 12, sampling=Sampling(temperature=1.0, top_k=1, seed=9)).token_ids == greedy
    assert backend.generate(prompt, 12).token_ids == greedy


def test_presence_penalty_acts_on_output_only(tiny_llm):
    """The tiny model's greedy answer repeats tokens; a presence penalty leaves the first token (no
    output yet) and then keeps every repeat out, a negative one repeats the first token for ever."""
    backend, tokenizer = tiny_llm
    prompt = question(tokenizer)
    greedy = backend.generate(prompt, 24).token_ids
    assert len(greedy) == 24 and len(set(greedy)) < 24
    discouraged = backend.generate(prompt, 24, sampling=Sampling(presence_penalty=2.0)).token_ids
    assert discouraged[0] == greedy[0] and len(set(discouraged)) == len(discouraged)
    encouraged = backend.generate(prompt, 24, sampling=Sampling(presence_penalty=-2.0)).token_ids
    assert set(encouraged) == {greedy[0]}


def test_on_token_returning_true_stops(tiny_llm):
    backend, tokenizer = tiny_llm
    seen: list[int] = []

    def stop_at_third(token: int) -> bool:
        seen.append(token)
        return len(seen) == 3

    generation = backend.generate(question(tokenizer), 12, on_token=stop_at_third)
    assert generation.stopped and generation.token_ids == seen and len(seen) == 3
    assert backend.generate(question(tokenizer), 12, on_token=lambda token: None).stopped is False
