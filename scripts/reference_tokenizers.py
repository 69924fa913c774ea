"""Reference token counter for the tests: the model families' own tokenizers, run from Python.

Usage: reference_tokenizers.py DIR, where DIR is what `scripts/reference-tokenizers.sh install`
filled (run with DIR/venv/bin/python). Reads one JSON request a line on stdin,
    {"tokenizer": "<name>", "texts": ["...", ...]}
and answers each with one line on stdout, {"counts": [n, ...]} or {"error": "..."}.
Exits at the end of stdin.

Tokenizers (each loaded once, on first use):
    llama3, llama4         tiktoken with Meta's rank files, pre-tokenizer pattern and special
                           tokens (llama_models/llama{3,4}/tokenizer.py); special-token text
                           counts as one token, as the model sees it
    mistral-v1             SentencePiece, tokenizer.model.v1; all text counted as text
    mistral-v1-specials    the same, for a server that parses <s> and </s> as special tokens:
                           each counts 1, and the text between them is encoded segment by segment
"""

import json
import os
import re
import sys

DIR = sys.argv[1] if len(sys.argv) > 1 else ""
MODELS = os.path.join(DIR, "models")

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA4_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def llama3_special_tokens():
    """The 256 special tokens of Llama 3, in id order from 128000."""
    named = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>",
        "<|finetune_right_pad_id|>",
        "<|step_id|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eom_id|>",
        "<|eot_id|>",
        "<|python_tag|>",
        "<|image|>",
    ]
    return named + [f"<|reserved_special_token_{2 + i}|>" for i in range(256 - len(named))]


def llama4_special_tokens():
    """The 2048 special tokens of Llama 4, in id order from 200000."""
    text_post_train = [
        "<|header_start|>",
        "<|header_end|>",
        "<|eom|>",
        "<|eot|>",
        "<|step|>",
        *(f"<|text_post_train_reserved_special_token_{i}|>" for i in range(6)),
        "<|python_start|>",
        "<|python_end|>",
        "<|finetune_right_pad|>",
        *(f"<|text_post_train_reserved_special_token_{i}|>" for i in range(8, 69)),
    ]
    vision = [
        "<|image_start|>",
        "<|image_end|>",
        "<|vision_reserved_special_token_0|>",
        "<|vision_reserved_special_token_1|>",
        "<|tile_x_separator|>",
        "<|tile_y_separator|>",
        *(f"<|vision_reserved_special_token_{i}|>" for i in range(2, 6)),
        "<|image|>",
        "<|vision_reserved_special_token_6|>",
        "<|patch|>",
        *(f"<|vision_reserved_special_token_{i}|>" for i in range(7, 1048)),
    ]
    reasoning = [
        *(f"<|reasoning_reserved_special_token_{i}|>" for i in range(8)),
        "<|reasoning_thinking_start|>",
        "<|reasoning_thinking_end|>",
    ]
    basic = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|fim_prefix|>",
        "<|fim_middle|>",
        "<|fim_suffix|>",
    ]
    named = basic + text_post_train + vision + reasoning
    return named + [f"<|reserved_special_token_{i}|>" for i in range(2048 - len(named))]


def tiktoken_counter(name, pattern, special_tokens):
    import tiktoken
    import tiktoken.load

    ranks = tiktoken.load.load_tiktoken_bpe(os.path.join(MODELS, name, "tokenizer.model"))
    specials = {token: len(ranks) + i for i, token in enumerate(special_tokens)}
    assert len(specials) == len(special_tokens), "duplicate special tokens"
    encoding = tiktoken.Encoding(
        name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=specials
    )
    return lambda text: len(encoding.encode(text, allowed_special="all"))


def sentencepiece_processor():
    import sentencepiece

    path = os.path.join(MODELS, "mistral-v1", "tokenizer.model.v1")
    return sentencepiece.SentencePieceProcessor(model_file=path)


def mistral_v1():
    sp = sentencepiece_processor()
    return lambda text: len(sp.encode(text))


SPECIALS = re.compile(r"(<s>|</s>)")


def mistral_v1_specials():
    sp = sentencepiece_processor()

    def count(text):
        # re.split with a group keeps the separators; empty segments count 0.
        return sum(
            1 if part in ("<s>", "</s>") else len(sp.encode(part))
            for part in SPECIALS.split(text)
            if part
        )

    return count


LOADERS = {
    "llama3": lambda: tiktoken_counter("llama3", LLAMA3_PATTERN, llama3_special_tokens()),
    "llama4": lambda: tiktoken_counter("llama4", LLAMA4_PATTERN, llama4_special_tokens()),
    "mistral-v1": mistral_v1,
    "mistral-v1-specials": mistral_v1_specials,
}
loaded = {}


def answer(line):
    try:
        request = json.loads(line)
        name, texts = request["tokenizer"], request["texts"]
        if name not in LOADERS:
            return {"error": f"unknown tokenizer {name!r}; this server has {sorted(LOADERS)}"}
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return {"error": "texts must be a list of strings"}
        if name not in loaded:
            loaded[name] = LOADERS[name]()
        return {"counts": [loaded[name](text) for text in texts]}
    except Exception as e:  # answer every request; the client reports the error
        return {"error": f"{type(e).__name__}: {e}"}


def main():
    for line in sys.stdin.buffer:  # bytes: UTF-8 whatever the locale says
        if line.strip():
            sys.stdout.write(json.dumps(answer(line)) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
