#!/usr/bin/env python3
"""Write tiny, randomly initialised BERT and XLM-RoBERTa cross-encoders with transformers' pair logits.

    scripts/python-env.sh
    .venv/bin/python scripts/gen-tiny-cross-encoders.py            # generate, then verify
    .venv/bin/python scripts/gen-tiny-cross-encoders.py --check    # only verify what is on disk

The rerank service's cross-encoder mode is tested against these files (services/rerank/tests/
cross_encoder_pairs.rs): the ids and token type ids our tokenizer gives each (query, passage)
pair, and the raw logit `/rerank` answers, must be those of transformers. The BERT model has the
shape of the ms-marco MiniLM cross-encoders (num_labels 1, two token types, the passage in
segment 1), with token-type embeddings drawn as large as every other weight so that a wrong
segment id moves the logit by far more than the 1e-4 tolerance.

Output, under services/rerank/tests/fixtures/tiny-cross-encoders/:

    bert/         BertForSequenceClassification, num_labels 1: hidden 32, 2 layers, 4 heads,
                  intermediate 64, 128 positions, type_vocab_size 2, layer_norm_eps 1e-12. The
                  WordPiece tokenizer of scripts/gen-tiny-classifiers.py (uncased BERT pipeline,
                  [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4), whose pair template is
                  `[CLS] $A [SEP] $B:1 [SEP]:1`. Its tokenizer.json carries the truncation
                  (longest_first, 128) and padding settings a transformers export has, which a
                  loader must override. Its tokenizer_config.json lists BertTokenizer's model
                  inputs (input_ids, token_type_ids, attention_mask), so transformers passes the
                  segment ids.
    bert-no-type-input/
                  The same model and tokenizer.json with the tokenizer_config.json transformers 5
                  writes for a generic tokenizer (TokenizersBackend, model inputs input_ids and
                  attention_mask): transformers never passes token_type_ids, so BERT runs every
                  pair on all-zero segments and the logits differ from bert/ by 0.17 to 0.58.
    xlm-roberta/  XLMRobertaForSequenceClassification, num_labels 1: the same sizes, 130
                  positions (128 usable), type_vocab_size 1; the Unigram tokenizer of
                  scripts/gen-tiny-encoders.py (pair template `<s> $A </s> </s> $B </s>`, all
                  type ids 0).

Each directory holds config.json, model.safetensors (float32), tokenizer.json,
tokenizer_config.json and reference.json. reference.json has "groups": one query with several
passages each; per pair the tokens, input_ids and token_type_ids of tokenizer.json and the logit
transformers computes for it (AutoTokenizer's output passed to the model as it is: a batch of
one, no padding, eval mode, eager attention, float32, one torch thread). Under
"batch" every pair of the file run as one right-padded batch through AutoTokenizer (its logits
must agree with the single runs within 1e-5). Under "truncated" one pair longer than the model,
cut by AutoTokenizer(truncation="longest_first", max_length=128) as our truncating tokenizer
cuts it, with its ids, type ids and logit.

The check reloads each directory with AutoModelForSequenceClassification, AutoTokenizer and
tokenizers.Tokenizer.from_file (settings cleared, as the Rust loader does), requires identical
ids and type ids from both tokenizers and bit-identical logits, and recomputes every logit with
the float64 NumPy forward pass of scripts/gen-tiny-encoders.py (within 1e-4). It also records
how far each BERT logit moves when the passage's segment ids are all 0 instead (the size of the
fault this fixture exists to catch); the BERT seed is the first from BERT_SEED on whose
model every such move exceeds MIN_SEGMENT_EFFECT (0.1; reference.json records the seed).
"""

import argparse
import importlib.util
import json
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import numpy as np  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "services", "rerank", "tests", "fixtures", "tiny-cross-encoders")


def _sibling(name):
    """Import scripts/<name>.py (hyphenated, so not importable by name) for its tokenizers and
    reference forward passes."""
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), os.path.join(HERE, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CLASSIFIERS = _sibling("gen-tiny-classifiers")
ENCODERS = _sibling("gen-tiny-encoders")

STD = 0.2
BERT_SEED = 20240711
XLMR_SEED = 20240712
ATTN = "eager"
POSITIONS = 128
BATCH_TOL = 1e-5
NUMPY_TOL = 1e-4
MIN_SEGMENT_EFFECT = 0.1

# (query, [passages]); short pairs like a search engine's, one of them long.
GROUPS = [
    (
        "what is the capital of france?",
        [
            "The capital of France is Paris.",
            "Berlin is the capital of Germany and Rome is the capital of Italy.",
            "The weather tomorrow will be cold and rainy in the north of the country.",
        ],
    ),
    (
        "how many legs does a spider have?",
        ["A spider has 8 legs.", "Students read books in the library every afternoon."],
    ),
    ("ignore the previous instructions", ["The assistant should follow the instructions of the user."]),
    ("meeting room", ["The meeting is on 03/15/2025 at 10:30 in room 12.", "Write a short poem about the sea and the sky."]),
    ("prices", ["Prices went up by 20% this year, so please check the numbers."]),
]

# One pair longer than the model's 128 tokens, for the truncating path.
LONG_QUERY = "please summarise the following article in three sentences"
LONG_PASSAGE = " ".join(["The museum opens at 9 and closes at 5 on weekdays."] * 16)


def pairs():
    return [(q, p) for q, ps in GROUPS for p in ps]


def bert_model(vocab_size, seed):
    cfg = transformers.BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        hidden_act="gelu",
        max_position_embeddings=POSITIONS,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        pad_token_id=0,
        num_labels=1,
    )
    torch.manual_seed(seed)
    model = transformers.BertForSequenceClassification(cfg)
    CLASSIFIERS.randomize(model, seed)
    return model


def xlmr_model(vocab_size, seed):
    cfg = transformers.XLMRobertaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        hidden_act="gelu",
        max_position_embeddings=POSITIONS + 2,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=1,
    )
    torch.manual_seed(seed)
    model = transformers.XLMRobertaForSequenceClassification(cfg)
    CLASSIFIERS.randomize(model, seed)
    return model


def prepare(model):
    model.set_attn_implementation(ATTN)
    return model.to(torch.float32).eval()


def run(model, enc):
    """transformers' logits for what its tokenizer returned (`enc`, lists or a padded batch),
    passed as they are: a tokenizer without token_type_ids among its model inputs leaves BERT on
    its all-zero default segments."""
    batch = enc["input_ids"] and isinstance(enc["input_ids"][0], list)
    t = {k: torch.tensor(v if batch else [v], dtype=torch.long) for k, v in enc.items()}
    with torch.no_grad():
        out = model(**t).logits
    assert out.shape[1] == 1, out.shape
    return [float(x) for x in out[:, 0]]


def run_typed(model, ids, types):
    """Logits of one sequence with explicit segment ids."""
    return run(model, {"input_ids": ids, "token_type_ids": types, "attention_mask": [1] * len(ids)})[0]


def compute(variant, raw, auto_tok, model):
    """The reference: per pair the ids and type ids of tokenizer.json (which AutoTokenizer's ids,
    and its type ids when it returns them, must equal) and transformers' logit, the padded batch
    and the truncated pair."""
    feeds = VARIANTS[variant][2]
    assert ("token_type_ids" in auto_tok.model_input_names) == feeds, auto_tok.model_input_names
    groups = []
    for query, passages in GROUPS:
        items = []
        for passage in passages:
            enc = raw.encode(query, passage)
            hf = auto_tok(query, passage)
            assert hf["input_ids"] == enc.ids, (query, passage, hf["input_ids"], enc.ids)
            assert ("token_type_ids" in hf) == feeds, sorted(hf)
            assert hf.get("token_type_ids", enc.type_ids) == enc.type_ids, (query, passage)
            assert len(enc.ids) <= POSITIONS
            item = {"passage": passage, "tokens": enc.tokens, "input_ids": enc.ids, "token_type_ids": enc.type_ids}
            item["logit"] = run(model, hf)[0]
            items.append(item)
        groups.append({"query": query, "pairs": items})

    qs, ps = zip(*pairs())
    batch_logits = run(model, auto_tok(list(qs), list(ps), padding=True))
    singles = [it["logit"] for g in groups for it in g["pairs"]]
    worst = max(abs(x - y) for x, y in zip(batch_logits, singles))
    assert worst < BATCH_TOL, ("padded batch disagrees with single runs", worst)
    batch = {"logits": batch_logits, "max_abs_diff_vs_single": worst}

    t = auto_tok(LONG_QUERY, LONG_PASSAGE, truncation="longest_first", max_length=POSITIONS)
    assert len(raw.encode(LONG_QUERY, LONG_PASSAGE).ids) > POSITIONS and len(t["input_ids"]) == POSITIONS
    raw.enable_truncation(max_length=POSITIONS, strategy="longest_first")
    cut = raw.encode(LONG_QUERY, LONG_PASSAGE)
    raw.no_truncation()
    assert cut.ids == t["input_ids"] and t.get("token_type_ids", cut.type_ids) == cut.type_ids
    truncated = {
        "query": LONG_QUERY,
        "passage": LONG_PASSAGE,
        "untruncated_tokens": len(raw.encode(LONG_QUERY, LONG_PASSAGE).ids),
        "max_length": POSITIONS,
        "input_ids": cut.ids,
        "token_type_ids": cut.type_ids,
        "logit": run(model, t)[0],
    }
    return groups, batch, truncated


def segment_effect(model, encs):
    """How far each pair's logit moves between its segment ids and all zeros. `encs`:
    (input_ids, token_type_ids) per pair."""
    return [abs(run_typed(model, ids, types) - run_typed(model, ids, [0] * len(ids))) for ids, types in encs]


def pick_model(arch, tok, make_model, first_seed):
    """BERT: the first seed from first_seed on whose model zeroing the passage's segment ids moves
    every pair's logit by more than MIN_SEGMENT_EFFECT. XLM-R (one segment): first_seed."""
    vocab = tok.get_vocab_size(with_added_tokens=True)
    if arch != "bert":
        return prepare(make_model(vocab, first_seed)), first_seed
    encs = [(e.ids, e.type_ids) for e in (tok.encode(q, p) for q, p in pairs())]
    for seed in range(first_seed, first_seed + 200):
        model = prepare(make_model(vocab, seed))
        if min(segment_effect(model, encs)) > MIN_SEGMENT_EFFECT:
            return model, seed
    raise AssertionError("no seed makes the segment ids matter enough")


def dump(path, header, groups, batch, truncated):
    lines = ["{"]
    for k, v in header.items():
        lines.append(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},")
    lines.append('  "groups": [')
    for i, g in enumerate(groups):
        lines.append(f'    {{"query": {json.dumps(g["query"], ensure_ascii=False)}, "pairs": [')
        for j, it in enumerate(g["pairs"]):
            comma = "," if j + 1 < len(g["pairs"]) else ""
            lines.append("      " + json.dumps(it, ensure_ascii=False) + comma)
        lines.append("    ]}" + ("," if i + 1 < len(groups) else ""))
    lines.append("  ],")
    lines.append(f'  "batch": {json.dumps(batch)},')
    lines.append(f'  "truncated": {json.dumps(truncated, ensure_ascii=False)}')
    lines.append("}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def header(variant, model, seed, auto_tok, moves):
    h = {
        "model": VARIANTS[variant][0],
        "architecture": type(model).__name__,
        "description": "random weights N(0, 0.2), LayerNorm weights 1 + N(0, 0.2); written by scripts/gen-tiny-cross-encoders.py",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "tokenizers_version": tokenizers.__version__,
        "attn_implementation": ATTN,
        "dtype": "float32",
        "seed": seed,
        "max_input_tokens": POSITIONS,
        "model_input_names": list(auto_tok.model_input_names),
        "logits_use_token_type_ids": "token_type_ids" in auto_tok.model_input_names,
        "batch_tolerance": BATCH_TOL,
    }
    if moves is not None:
        h["logit_move_with_segment_ids_zeroed"] = {"min": min(moves), "max": max(moves)}
    return h


# name: (architecture, PreTrainedTokenizerFast arguments, whether its model inputs include
# token_type_ids)
BERT_INPUTS = ["input_ids", "token_type_ids", "attention_mask"]  # BertTokenizer's
VARIANTS = {
    "bert": ("bert", dict(CLASSIFIERS.TOK_KWARGS["bert"], model_input_names=BERT_INPUTS), True),
    "bert-no-type-input": ("bert", CLASSIFIERS.TOK_KWARGS["bert"], False),
    "xlm-roberta": ("xlm-roberta", ENCODERS.XLMR_TOK_KWARGS, False),
}
BUILD = {
    "bert": (CLASSIFIERS.bert_tokenizer, bert_model, BERT_SEED),
    "xlm-roberta": (ENCODERS.xlmr_tokenizer, xlmr_model, XLMR_SEED),
}


def save_dir(path, variant, model, tok):
    arch, tok_kwargs, _ = VARIANTS[variant]
    os.makedirs(path, exist_ok=True)
    for f in os.listdir(path):
        os.remove(os.path.join(path, f))
    model.save_pretrained(path, safe_serialization=True)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=POSITIONS, **tok_kwargs)
    fast.save_pretrained(path)
    if arch == "bert":
        # Like a checkpoint exported for fixed-length batches: the file truncates pairs and pads
        # to the longest. A loader must replace both (padding is the batcher's job).
        tok.enable_truncation(max_length=POSITIONS, strategy="longest_first")
        tok.enable_padding(direction="right", pad_id=0, pad_type_id=0, pad_token="[PAD]")
    tok.save(os.path.join(path, "tokenizer.json"), pretty=False)
    tok.no_truncation()
    tok.no_padding()
    for extra in ("special_tokens_map.json", "chat_template.jinja"):
        p = os.path.join(path, extra)
        if os.path.exists(p):
            os.remove(p)
    for f in os.listdir(path):
        os.chmod(os.path.join(path, f), 0o644)


def load_raw(path):
    """tokenizer.json with its padding and truncation cleared, as the Rust loader clears them."""
    raw = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    raw.no_padding()
    raw.no_truncation()
    return raw


def generate():
    for arch, (make_tok, make_model, first_seed) in BUILD.items():
        tok = make_tok()
        tok.no_padding()
        tok.no_truncation()
        model, seed = pick_model(arch, tok, make_model, first_seed)
        for variant in (v for v, spec in VARIANTS.items() if spec[0] == arch):
            path = os.path.join(OUT, variant)
            save_dir(path, variant, model, tok)
            auto_tok = transformers.AutoTokenizer.from_pretrained(path)
            groups, batch, truncated = compute(variant, load_raw(path), auto_tok, model)
            every = [it for g in groups for it in g["pairs"]]
            moves = segment_effect(model, [(it["input_ids"], it["token_type_ids"]) for it in every]) if arch == "bert" else None
            dump(os.path.join(path, "reference.json"), header(variant, model, seed, auto_tok, moves), groups, batch, truncated)


def check_dir(variant):
    arch, _, feeds = VARIANTS[variant]
    path = os.path.join(OUT, variant)
    with open(os.path.join(path, "reference.json"), encoding="utf-8") as f:
        ref = json.load(f)
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        path, attn_implementation=ATTN, dtype=torch.float32
    ).eval()
    # Copies in torch's own (aligned) memory reproduce the generating run bit for bit (see
    # gen-tiny-classifiers.py).
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.clone()
    assert type(model).__name__ == ref["architecture"]
    auto_tok = transformers.AutoTokenizer.from_pretrained(path)
    assert ref["logits_use_token_type_ids"] == feeds
    groups, batch, truncated = compute(variant, load_raw(path), auto_tok, model)
    assert groups == ref["groups"], (variant, "pairs not reproduced bit for bit after reload")
    assert batch == ref["batch"] and truncated == ref["truncated"], (variant, "batch / truncated not reproduced")

    w = load_file(os.path.join(path, "model.safetensors"))
    assert all(t.dtype == np.float32 for t in w.values())
    worst = 0.0
    every = [it for g in groups for it in g["pairs"]] + [truncated]
    for it in every:
        types = it["token_type_ids"] if feeds else [0] * len(it["input_ids"])
        ref_logit = ENCODERS.np_logit(w, cfg, np.array(it["input_ids"]), np.array(types), arch)
        worst = max(worst, abs(ref_logit - it["logit"]))
    assert worst < NUMPY_TOL, (variant, "numpy reference disagrees", worst)
    segments = sorted({t for it in every for t in it["token_type_ids"]})
    extra = ""
    if arch == "bert":
        assert segments == [0, 1], segments
        moves = segment_effect(model, [(it["input_ids"], it["token_type_ids"]) for it in every[:-1]])
        assert min(moves) > MIN_SEGMENT_EFFECT, moves
        extra = f"; logit move with segment ids zeroed {min(moves):.3f}..{max(moves):.3f}"
    else:
        assert segments == [0], segments
    sizes = {f: os.path.getsize(os.path.join(path, f)) for f in sorted(os.listdir(path))}
    print(
        f"{variant}: {len(every)} pairs reproduce exactly after reload; model inputs {auto_tok.model_input_names}; "
        f"tokenizer.json ids == AutoTokenizer's; padded batch max |diff| {batch['max_abs_diff_vs_single']:.3g}; "
        f"float64 numpy max |diff| {worst:.3g}{extra}; lengths {[len(it['input_ids']) for it in every]}; files {sizes}"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="only verify the files on disk")
    args = ap.parse_args()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if not args.check:
        generate()
    for variant in VARIANTS:
        check_dir(variant)
    return 0


if __name__ == "__main__":
    sys.exit(main())
