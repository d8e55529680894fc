"""Choosing the next token with torch (the transformers backend; imported only there).

transformers' own logits processors do the repetition penalty, temperature, top-k and top-p, in the
order ``generate`` and vLLM apply them (penalties, then temperature, then the filters); OpenAI's
frequency and presence penalties, which transformers does not have, are :class:`OutputPenalty`.
"""
from __future__ import annotations

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from .base import Sampling


class OutputPenalty(LogitsProcessor):
    """OpenAI's penalties on the tokens generated so far (the prompt's first ``prompt_length`` ids are
    not counted): a token seen c times loses c * frequency + (c > 0) * presence from its logit."""

    def __init__(self, frequency: float, presence: float, prompt_length: int) -> None:
        self.frequency, self.presence, self.prompt_length = frequency, presence, prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        """input_ids: (B, L) prompt then output ids; scores: (B, V) logits -> (B, V) penalized logits."""
        output = input_ids[:, self.prompt_length:]
        counts = torch.zeros_like(scores).scatter_add_(1, output, torch.ones_like(output, dtype=scores.dtype))
        return scores - counts * self.frequency - (counts > 0).to(scores.dtype) * self.presence


def logits_processors(sampling: Sampling, prompt_length: int) -> LogitsProcessorList:
    """The processors ``sampling`` needs, in the order they apply (empty for plain greedy)."""
    processors = LogitsProcessorList()
    if sampling.repetition_penalty != 1:
        processors.append(RepetitionPenaltyLogitsProcessor(penalty=float(sampling.repetition_penalty)))
    if sampling.frequency_penalty or sampling.presence_penalty:
        processors.append(OutputPenalty(float(sampling.frequency_penalty), float(sampling.presence_penalty),
                                        prompt_length))
    if not sampling.greedy:
        if sampling.temperature != 1:
            processors.append(TemperatureLogitsWarper(float(sampling.temperature)))
        if sampling.top_k:
            processors.append(TopKLogitsWarper(int(sampling.top_k)))
        if sampling.top_p < 1:
            processors.append(TopPLogitsWarper(float(sampling.top_p)))
    return processors


class TokenChooser:
    """The next token of one request from the last position's logits.

    prompt_ids: the prompt's token ids (what the repetition penalty sees besides the output; the video
    placeholder stands for the video, whose id is the same at every one of its positions).
    Greedy without penalties is a plain argmax of the logits as the model returned them. Sampling
    draws from a per-request ``torch.Generator`` on ``device`` seeded with ``sampling.seed`` (a fresh
    random seed when None), so one seed gives one answer on one machine.
    """

    def __init__(self, sampling: Sampling, prompt_ids: list[int], device: str | torch.device) -> None:
        self.sampling = sampling
        self.processors = logits_processors(sampling, len(prompt_ids))
        self.ids = torch.tensor([prompt_ids], dtype=torch.long, device=device) if self.processors else None
        self.generator = None
        if not sampling.greedy:
            self.generator = torch.Generator(device=device)
            if sampling.seed is None:
                self.generator.seed()
            else:
                self.generator.manual_seed(sampling.seed)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """(V,) logits -> (1, V) float32 scores after every processor (what is argmaxed or drawn from)."""
        scores = logits[None].float()
        return self.processors(self.ids, scores) if self.processors else scores

    def __call__(self, logits: torch.Tensor) -> int:
        """The next token id from (V,) logits; remembered for the penalties of the next steps."""
        if self.sampling.greedy and not self.processors:
            return int(logits.argmax())
        scores = self.scores(logits)
        if self.sampling.greedy:
            token = scores.argmax(dim=-1, keepdim=True)
        else:
            token = torch.multinomial(scores.softmax(dim=-1), 1, generator=self.generator)
        if self.ids is not None:
            self.ids = torch.cat([self.ids, token], dim=1)
        return int(token)
