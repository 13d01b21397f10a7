"""A character-level tokenizer made in code, for the tiny model trained from scratch.

Every printable ASCII character and the newline is one token; the R1 tags `<think>`,
`</think>`, `<answer>`, `</answer>` are one token each (added tokens, not special, so decoding
with `skip_special_tokens=True` keeps them). `<pad>`, `<eos>`, `<bos>`, `<unk>` are special;
any other character encodes as `<unk>`. The ids are fixed by construction, so two builds agree.

>>> tok = build_char_tokenizer()
>>> tok.convert_ids_to_tokens(tok("<think>12</think>")["input_ids"])
['<think>', '1', '2', '</think>']
"""
from __future__ import annotations

import string

SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>"}
R1_TAGS = ["<think>", "</think>", "<answer>", "</answer>"]
CHARACTERS = sorted(set(string.printable) - set("\t\r\x0b\x0c"))  # printable ASCII, space, newline

# Q:/A: turns, matching the `r1` prompt template, so chat and plain prompts look alike to the model.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n"
    "{% elif message['role'] == 'user' %}Q: {{ message['content'] }}\n"
    "{% else %}A: {{ message['content'] }}{{ eos_token }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}A: {% endif %}"
)


def build_char_tokenizer():
    """A `PreTrainedTokenizerFast` over characters; save_pretrained/from_pretrained round-trip it."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS.values(), *R1_TAGS, *CHARACTERS])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one piece per character
    core.decoder = decoders.Fuse()  # join pieces with nothing between them
    core.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIAL_TOKENS.values()])
    core.add_tokens([AddedToken(t, normalized=False, special=False) for t in R1_TAGS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        clean_up_tokenization_spaces=False,  # the default would glue " ." to "." and break round trips
        padding_side="left",  # generation pads on the left so every prompt ends at the same column
        model_max_length=1 << 20,
        **SPECIAL_TOKENS,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
