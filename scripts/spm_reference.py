#!/usr/bin/env python3
"""Reference token counts of the real `sentencepiece` for rag-core's SentencePieceCounter.

Writes JSON lines of `text`, `count` (len(sp.encode(text)), no BOS) and `count_part` (the
same with the model's add_dummy_prefix turned off) for the texts of a JSONL corpus (its
"text" fields) and for random strings. Compare with:

    RAG_SPM_REFERENCE=OUT cargo test -p rag-core --lib matches_reference_counts -- --nocapture

Needs `pip install sentencepiece protobuf`. The output holds the corpus text: keep it out of
the repository.
"""

import argparse
import json
import random

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

# Pieces of text the tokenizer treats differently: words, spaces and U+2581, line breaks,
# tabs, digits, punctuation, accented and non-Latin letters, characters outside the
# vocabulary (emoji, rare CJK, control characters), and special-token look-alikes.
ATOMS = [
    "the", "Lambda", "function", "a", "aaaa", "x", "Q", "ing", "tion", "un",
    " ", " ", " ", "  ", "\u2581", "\t", "\n", "\n\n", "\r\n", "\r",
    "0", "7", "2024", "3.14", ".", ",", ";", ":", "!", "?", "(", ")", "[", "]", "{", "}",
    "\"", "'", "-", "_", "/", "\\", "<", ">", "=", "+", "*", "#", "@", "&", "%",
    "é", "ü", "ß", "ñ", "λ", "ж", "ω", "日本", "語", "中文", "テキスト", "한국어", "ä",
    "🎉", "🦀", "👍🏽", "\u0000", "\u0007", "\u200b", "\u00a0", "\u3000", "\ufeff", "𝔘",
    "<s>", "</s>", "[INST]", "[/INST]", "<unk>", "<0x41>",
]


def random_text(rng: random.Random) -> str:
    n = rng.choice([1, 2, 3, 5, 8, 13, 30, 80])
    return "".join(rng.choice(ATOMS) for _ in range(n))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="the .model file")
    ap.add_argument("--corpus", help="a JSONL file whose lines have a 'text' field")
    ap.add_argument("--random", type=int, default=0, help="how many random strings")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    raw = open(args.model, "rb").read()
    sp = spm.SentencePieceProcessor(model_proto=raw)
    proto = pb.ModelProto()
    proto.ParseFromString(raw)
    proto.normalizer_spec.add_dummy_prefix = False
    sp_part = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())

    texts = []
    if args.corpus:
        with open(args.corpus, encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for line in f if line.strip()]
    rng = random.Random(args.seed)
    texts += [random_text(rng) for _ in range(args.random)]

    with open(args.out, "w", encoding="utf-8") as out:
        for t in texts:
            row = {"text": t, "count": len(sp.encode(t)), "count_part": len(sp_part.encode(t))}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(texts)} texts written to {args.out}")


if __name__ == "__main__":
    main()
