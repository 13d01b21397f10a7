"""Rollout engine on transformers `generate`.

Prompts are left-padded into one batch, each repeated G times (a group is G adjacent rows), and
sampled with exactly the knobs in `SamplingParams`: the model's own `generation_config` may carry
defaults such as `repetition_penalty` or `top_k=20` that would make the sampling distribution
differ from the policy the loss assumes, so every distribution-shaping field is set explicitly.

Stop strings end a completion on a token boundary: generation stops early once every row has hit
EOS or a stop string, and each completion is then cut after the first token whose decoded prefix
contains a stop string. Token ids are kept as sampled; text is only decoded for the verifiers.
"""
from __future__ import annotations

import torch
from accelerate.utils import extract_model_from_parallel
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from rlvr.rollout.base import Rollout, SamplingParams, eval_mode
from rlvr.rollout.tokens import cut_completion, eos_token_ids, left_pad, pad_token_id


class HFEngine:
    """`RolloutEngine` on `model.generate`; works with plain, peft and accelerate-wrapped models."""

    def __init__(self, model, tokenizer):
        # generate runs on the module itself, not on a DDP/DeepSpeed wrapper (peft models stay as they are)
        self.model = extract_model_from_parallel(model)
        self.tokenizer = tokenizer
        self.eos_ids = eos_token_ids(self.model, tokenizer)
        self.pad_id = pad_token_id(tokenizer, self.eos_ids)

    @torch.no_grad()
    def generate(self, prompt_ids: list[list[int]], group_size: int, params: SamplingParams) -> Rollout:
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        if not prompt_ids or any(len(p) == 0 for p in prompt_ids):
            raise ValueError("generate needs at least one prompt and no empty prompt")
        if params.seed is not None:
            torch.manual_seed(params.seed)
        device = next(self.model.parameters()).device
        input_ids, attention_mask = left_pad(
            [p for p in prompt_ids for _ in range(group_size)], self.pad_id, device
        )  # (N, P)
        prompt_len = input_ids.shape[1]
        stopping = StoppingCriteriaList()
        if params.stop:
            stopping.append(_StopStrings(self.tokenizer, params.stop, prompt_len))
        recorder = _SampledLogprobs(params)
        # eval: no dropout while sampling; gradient checkpointing off (it needs use_cache=False)
        with eval_mode(self.model):
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                generation_config=self._generation_config(params),
                stopping_criteria=stopping,
                logits_processor=LogitsProcessorList([recorder]),
            )
        new_tokens = out[:, prompt_len:]  # (N, <=max_new_tokens)
        step_logprobs = recorder.finish(new_tokens).tolist()  # host sync, once per batch
        completions, texts, truncated, logprobs = [], [], [], []
        for row, row_logprobs in zip(new_tokens.tolist(), step_logprobs):
            ids, hit_stop = cut_completion(row, self.eos_ids, self.tokenizer, params.stop)
            completions.append(ids)
            logprobs.append(row_logprobs[:len(ids)])
            texts.append(self.tokenizer.decode(ids, skip_special_tokens=True))
            truncated.append(not hit_stop and len(ids) >= params.max_new_tokens)
        return Rollout(
            prompt_ids=[list(p) for p in prompt_ids],
            completion_ids=completions,
            texts=texts,
            truncated=truncated,
            logprobs=logprobs,
        )

    def _generation_config(self, p: SamplingParams) -> GenerationConfig:
        if p.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {p.max_new_tokens}")
        if p.temperature < 0 or not 0 < p.top_p <= 1 or p.top_k < 0:
            raise ValueError(f"invalid sampling params: temperature={p.temperature}, top_p={p.top_p}, top_k={p.top_k}")
        greedy = p.temperature == 0
        neutral = dict(repetition_penalty=1.0, no_repeat_ngram_size=0, min_new_tokens=0,
                       typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0)
        sampling = {} if greedy else dict(temperature=p.temperature, top_p=p.top_p, top_k=p.top_k)
        return GenerationConfig(
            do_sample=not greedy,
            max_new_tokens=p.max_new_tokens,
            eos_token_id=self.eos_ids or None,
            pad_token_id=self.pad_id,
            num_beams=1,
            **neutral,
            **sampling,
        )



class _SampledLogprobs(LogitsProcessor):
    """Log-probs of the sampled tokens under the distribution they were drawn from.

    transformers runs custom processors before its sampling warpers, so this applies the same
    warpers (temperature, top-k, top-p, in transformers' order; the generation config turns every
    other processor off) to a copy of the scores. It keeps one step's log-softmax (N, V) and reads
    the chosen token's entry when the next step shows which token was appended: never N x T x V.
    Greedy decoding records the model's own log-probs.
    """

    def __init__(self, params: SamplingParams):
        self.warpers = LogitsProcessorList()
        if params.temperature > 0:
            if params.temperature != 1.0:
                self.warpers.append(TemperatureLogitsWarper(params.temperature))
            if params.top_k:
                self.warpers.append(TopKLogitsWarper(top_k=params.top_k))
            if params.top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(top_p=params.top_p))
        self.pending: torch.Tensor | None = None  # (N, V) log-softmax of the last step's distribution
        self.taken: list[torch.Tensor] = []  # (N,) per step

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._take(input_ids[:, -1])
        self.pending = torch.log_softmax(self.warpers(input_ids, scores.float().clone()), dim=-1)
        return scores

    def _take(self, tokens: torch.Tensor) -> None:
        if self.pending is not None:
            self.taken.append(self.pending.gather(1, tokens[:, None]).squeeze(1))
            self.pending = None

    def finish(self, new_tokens: torch.Tensor) -> torch.Tensor:
        """(N, T_new) log-probs aligned with the new tokens (the last step read from the output)."""
        if new_tokens.shape[1] > len(self.taken):
            self._take(new_tokens[:, len(self.taken)])
        if not self.taken:
            return new_tokens.new_zeros(new_tokens.shape, dtype=torch.float32)
        return torch.stack(self.taken[: new_tokens.shape[1]], dim=1)


class _StopStrings(StoppingCriteria):
    """Marks a row done once its recent tokens decode to text containing a stop string.

    Only the last few tokens are decoded (a stop string of L characters spans at most L tokens
    that each decode to >= 1 character); `cut_completion` makes the exact, full-text cut afterwards.
    """

    def __init__(self, tokenizer, stops: list[str], prompt_len: int):
        self.tokenizer = tokenizer
        self.stops = stops
        self.prompt_len = prompt_len
        self.window = max(len(s) for s in stops) + 2

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        tails = input_ids[:, self.prompt_len:][:, -self.window:].tolist()
        texts = self.tokenizer.batch_decode(tails, skip_special_tokens=True)
        done = [any(s in t for s in self.stops) for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
