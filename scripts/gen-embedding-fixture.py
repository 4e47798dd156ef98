#!/usr/bin/env python3
"""Write the PyTorch reference embeddings that the Rust embedding service is tested against.

    scripts/fetch-models.sh && scripts/python-env.sh
    .venv/bin/python scripts/gen-embedding-fixture.py [--model DIR] [--out FILE]

Loads models/all-MiniLM-L6-v2 with sentence_transformers.SentenceTransformer (offline, CPU)
and writes services/embedding/tests/fixtures/minilm_reference.json:

    {"model": "all-MiniLM-L6-v2", "max_seq_length": 256, "dimension": 384,
     "sentence_transformers_version": ..., "torch_version": ..., "normalized": true,
     "items": [{"id": ..., "text": ..., "tokens": N, "token_ids": [...], "embedding": [...]}]}

`tokens` is the number of token ids the model ran on after truncation to max_seq_length,
[CLS] and [SEP] included; `token_ids` are those ids. Each text is encoded on its own (a batch
of one, so no padding is involved) with normalize_embeddings=True; floats are rounded to 7
significant digits. One torch thread and deterministic algorithms, so a rerun writes the same
bytes.
"""

import argparse
import json
import os
import sys

# Before importing anything from Hugging Face: never try the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.path.join(os.environ.get("MODELS_DIR", os.path.join(ROOT, "models")), "all-MiniLM-L6-v2")
DEFAULT_OUT = os.path.join(ROOT, "services", "embedding", "tests", "fixtures", "minilm_reference.json")

# About 150 tokens.
MEDIUM = (
    "Retrieval-augmented generation combines a search step with a language model. When a user "
    "asks a question, the system first turns the question into a vector with an embedding model, "
    "then looks up the passages whose vectors are closest to it in a vector database. Those "
    "passages are reranked, and the best few are pasted into the prompt together with the "
    "question, so that the language model can answer from real documents instead of from memory "
    "alone. Each of these steps is a small service with an HTTP interface: the embedder, the "
    "retriever, the reranker and the generator. A gateway calls them in order and streams the "
    "answer back to the user while it is being written."
)

# Well over 300 tokens, so that truncation to max_seq_length (256) matters.
LONG = (
    "The history of the printing press begins long before Johannes Gutenberg. Woodblock printing "
    "was practised in China by the ninth century, and movable type made of baked clay was "
    "described by Shen Kuo, who credited the invention to the artisan Bi Sheng around 1040. "
    "Metal movable type appeared in Korea in the thirteenth century, and the Jikji, printed in "
    "1377, is the oldest surviving book made that way. In Europe, Gutenberg's contribution in "
    "the 1440s was not a single idea but a system: a hand mould that could cast large numbers of "
    "identical letters quickly, an alloy of lead, tin and antimony that melted at a low "
    "temperature and cooled without shrinking much, an oil-based ink that stuck to metal, and a "
    "screw press adapted from the ones used to make wine and paper. Together these made printing "
    "cheap enough to change how knowledge moved. Within fifty years presses were working in more "
    "than two hundred cities, and millions of books had been produced. Prices fell, literacy "
    "rose, and scholars could compare identical copies of a text instead of copies that differed "
    "in every line. The Reformation, the scientific revolution and the rise of newspapers all "
    "depended on it. Later improvements came slowly at first: iron presses in the eighteenth "
    "century, steam power in the nineteenth, then the rotary press, the Linotype machine that set "
    "whole lines of type from a keyboard, offset lithography, phototypesetting and finally "
    "digital printing, in which no type exists at all. Each step lowered the cost of a printed "
    "page again, and each was met with the same mixture of excitement and worry about what would "
    "happen when words became even easier to copy and spread."
)

# (id, text). Ids are stable names the Rust tests can refer to.
TEXTS = [
    ("sentence", "The quick brown fox jumps over the lazy dog."),
    ("question", "What is the capital of France?"),
    ("single_word", "embedding"),
    ("single_char", "a"),
    ("dot_in_spaces", " . "),
    ("whitespace_only", "  \t\n  "),
    ("empty", ""),
    ("numbers", "3.14159 2718 42 1,000,000 -7 1e-9 0x1F 2024-05-17"),
    ("code", 'fn main() { let v: Vec<i32> = (0..10).map(|x| x * x).collect(); println!("{:?}", v); }'),
    ("accented_latin", "Le café était très crème brûlée à São Paulo ; naïve façade, Ærøskøbing, Łódź."),
    ("combining_accents", "Cafe\u0301 in Zu\u0308rich, nin\u0303o"),
    ("chinese", "我们今天去公园散步，天气非常好。"),
    ("japanese", "東京は日本の首都です。ひらがなとカタカナも使います。"),
    ("korean", "안녕하세요, 세계! 임베딩 모델 테스트입니다."),
    ("cyrillic_arabic", "Привет, мир! مرحبا بالعالم"),
    ("emoji", "I love pizza 🍕🔥😂 and my family 👨\u200d👩\u200d👧 👍🏽"),
    ("mixed_case_punct", 'HeLLo, WoRLD!!! Isn\'t it... "GREAT"?! (yes/no) -- e-mail: Foo.Bar@Example.COM; 100% #1 & <ok>'),
    ("url", "https://example.com/search?q=rust+embeddings&lang=en#results"),
    ("long_word", "pneumonoultramicroscopicsilicovolcanoconiosis" * 3),
    ("control_chars", "tab\there\u200bzero\u00a0width\u0007bell"),
    ("medium_150_tokens", MEDIUM),
    ("long_over_300_tokens", LONG),
]


def sig7(x):
    """Round to 7 significant digits; returns a float whose repr is short."""
    return float(f"{float(x):.7g}")


def to_json(doc):
    """Pretty at the top level, one line per item: small, and diffs stay readable."""
    head = {k: v for k, v in doc.items() if k != "items"}
    lines = ["{"]
    for k, v in head.items():
        lines.append(f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},")
    lines.append(' "items": [')
    rows = [" " + json.dumps(it, ensure_ascii=False, separators=(",", ":")) for it in doc["items"]]
    lines.append(",\n".join(rows))
    lines.append(" ]")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == doc
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL, help="sentence-transformers model dir (default: %(default)s)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="output JSON (default: %(default)s)")
    args = ap.parse_args()

    if not os.path.isfile(os.path.join(args.model, "modules.json")):
        sys.exit(f"{args.model} is not a sentence-transformers model directory; run scripts/fetch-models.sh first")

    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    model = SentenceTransformer(args.model, device="cpu", local_files_only=True)
    model.eval()
    max_len = model.max_seq_length

    def token_ids(text):
        # What encode() feeds the transformer: the same preprocessing, truncation included.
        prep = model.preprocess if hasattr(model, "preprocess") else model.tokenize
        feats = prep([text])
        ids = feats["input_ids"][0]
        mask = feats["attention_mask"][0]
        return [int(i) for i, m in zip(ids.tolist(), mask.tolist()) if m]

    items = []
    with torch.inference_mode():
        for ident, text in TEXTS:
            ids = token_ids(text)
            emb = model.encode([text], batch_size=1, normalize_embeddings=True, convert_to_numpy=True)[0]
            norm = float((emb.astype("float64") ** 2).sum() ** 0.5)
            if abs(norm - 1.0) > 1e-5:
                sys.exit(f"{ident}: embedding norm {norm}, expected 1")
            items.append({
                "id": ident,
                "text": text,
                "tokens": len(ids),
                "token_ids": ids,
                "embedding": [sig7(v) for v in emb.tolist()],
            })
            print(f"{ident:22} {len(ids):4} tokens  {emb[:3]}", file=sys.stderr)

    # Sanity: the long text must actually be truncated, the medium one must not.
    by_id = {it["id"]: it for it in items}
    assert by_id["long_over_300_tokens"]["tokens"] == max_len, by_id["long_over_300_tokens"]["tokens"]
    full = len(model.tokenizer(LONG, add_special_tokens=True, truncation=False, verbose=False)["input_ids"])
    assert full > 300, full
    assert by_id["medium_150_tokens"]["tokens"] < max_len

    out = {
        "model": os.path.basename(os.path.normpath(args.model)),
        "max_seq_length": max_len,
        "dimension": len(items[0]["embedding"]),
        "sentence_transformers_version": sentence_transformers.__version__,
        "torch_version": torch.__version__,
        "normalized": True,
        "note": "each text encoded alone (batch of 1, no padding) on CPU with 1 thread; "
        "tokens = ids after truncation incl. [CLS]/[SEP]; floats rounded to 7 significant digits; "
        f"long_over_300_tokens is {full} tokens before truncation",
        "items": items,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(to_json(out))
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: {len(items)} items, {os.path.getsize(args.out)} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
