#!/usr/bin/env python3
"""Write tiny, randomly initialised BERT and XLM-RoBERTa checkpoints with known outputs.

    scripts/python-env.sh
    .venv/bin/python scripts/gen-tiny-encoders.py            # generate, then verify
    .venv/bin/python scripts/gen-tiny-encoders.py --check    # only verify what is on disk

The Rust (candle) encoder is tested against these files, so it can prove its numerics without
downloading a real model. Everything is made here from fixed seeds; a rerun writes the same bytes
(with the same torch / transformers / tokenizers versions).

Output, under comps-models/tests/fixtures/tiny-encoders/:

    bert/          BertForSequenceClassification, num_labels=1 (the shape of the ms-marco
                   cross-encoders); hidden 32, 2 layers, 4 heads, intermediate 64, 64 positions,
                   2 token types; a hand-written WordPiece vocabulary (uncased BERT pipeline).
    xlm-roberta/   XLMRobertaForSequenceClassification, num_labels=1 (the shape of the bge
                   rerankers); hidden 32, 2 layers, 4 heads, intermediate 64, 66 positions
                   (positions start at pad_token_id + 1 = 2), 1 token type; a Unigram
                   (SentencePiece-style) vocabulary trained here on sentences written below.

Each directory holds config.json, model.safetensors (float32), tokenizer.json,
tokenizer_config.json and expected.json. expected.json lists single texts with the base
encoder's last_hidden_state mean-pooled over all tokens (`mean`) and at position 0 (`cls`), and
(query, passage) pairs with the classification model's single logit. Every input is run on its own
(a batch of one, no padding), in eval mode, float32, eager attention, one torch thread.

All weights are drawn from N(0, 0.2) (LayerNorm weights from 1 + N(0, 0.2)), biases included,
so that every parameter matters and the outputs are far from zero.

The check reloads each directory with AutoModel / AutoModelForSequenceClassification,
tokenizers.Tokenizer.from_file and AutoTokenizer, and requires identical ids and bit-identical
outputs; it also recomputes every output with an independent float64 NumPy forward pass written
from the safetensors tensors (the same arithmetic the Rust side does) and requires agreement to
within 1e-4.
"""

import argparse
import json
import math
import os
import random
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"  # single-threaded tokenizers (see xlmr_tokenizer for the rest)

import numpy as np  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "comps-models", "tests", "fixtures", "tiny-encoders")

STD = 0.2
BERT_SEED = 20240601
XLMR_SEED = 20240602
CORPUS_SEED = 7
ATTN = "eager"
NUMPY_TOL = 1e-4

# ---------------------------------------------------------------------------------------------
# Inputs recorded in expected.json (the same for both models).

SINGLES = [
    ("short", "The quick brown fox jumps over the lazy dog."),
    (
        "long",
        "Retrieval augmented generation first searches a small collection of documents, then "
        "reranks the passages it found and asks the language model to write a short answer "
        "grounded in facts.",
    ),
    ("single_word", "embedding"),
    ("unknown_words", "Straße 東京 🙂 naïve zebras"),
    ("punctuation_digits", "Cross-encoders score 3 passages, don't they?"),
]

PAIRS = [
    ("relevant", "what is the capital of france?", "Paris is the capital and largest city of France."),
    (
        "explanation",
        "how do cross encoders rank passages?",
        "A cross encoder reads the query and the passage together and outputs one relevance score.",
    ),
    ("irrelevant", "best pizza in town", "The weather tomorrow will be cold and rainy in the north."),
    ("question_answer", "who wrote the book?", "The book was written by a teacher from the north."),
    ("numbers", "how many legs does a spider have?", "A spider has 8 legs and most insects have 6."),
    ("short_passage", "red planet", "Mars."),
    ("long_query", "what is the best way to store the documents we found for the language model to use later?", "Store them in a small collection."),
    ("same_text", "the quick brown fox", "the quick brown fox"),
    ("unknown_pair", "Straße 東京?", "naïve zebras 🙂"),
    ("punctuation_pair", "don't they?", "Yes, they do: 3 of them!"),
]

# ---------------------------------------------------------------------------------------------
# BERT: a hand-made WordPiece vocabulary.

BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BERT_PUNCT = list(".,?!'\"-:;()/&%$#@*+=")
BERT_WORDS = """
the a an of and or to in on at by for with from as is are was were be been being it its this
that these those they them their he she we you i my our your what which who how why when where
not no yes do does did don can will would should could may must have has had there here then
than so if but all any some each every one two three first last new old good best bad small
large big long short quick slow brown red blue green black white fox dog cat lazy jump over under
into out up down about after before between through city capital france paris largest country
town north south weather tomorrow today cold warm hot rain rainy sunny pizza food eat bread
water coffee tea read reads write query queries passage document documents answer question
search score rank cross model language word words text sentence token vector relevance
retrieval generation collection fact facts ground found ask asks keep only together output
outputs input service server request time day year people work world house book
""".split()
BERT_SUBWORDS = [
    "##s", "##es", "##ed", "##ing", "##er", "##ers", "##ly", "##y", "##ion", "##ment",
    "##bed", "##ding", "##rank", "##augment", "##code", "##ive", "##al", "##ness", "##able", "##est",
]
BERT_EXTRA_PREFIXES = ["em", "re", "en", "aug", "un", "na"]


def bert_vocab():
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    digits = [str(d) for d in range(10)]
    entries = (
        BERT_SPECIALS
        + BERT_PUNCT
        + digits
        + ["##" + d for d in digits]
        + letters
        + ["##" + c for c in letters]
        + BERT_WORDS
        + BERT_EXTRA_PREFIXES
        + BERT_SUBWORDS
    )
    seen, vocab = set(), []
    for e in entries:
        if e not in seen:
            seen.add(e)
            vocab.append(e)
    return {tok: i for i, tok in enumerate(vocab)}


def bert_tokenizer():
    vocab = bert_vocab()
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tok.add_special_tokens(BERT_SPECIALS)
    assert [tok.token_to_id(t) for t in BERT_SPECIALS] == [0, 1, 2, 3, 4]
    return tok


# ---------------------------------------------------------------------------------------------
# XLM-RoBERTa: a Unigram vocabulary trained on sentences generated here.

XLMR_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
XLMR_VOCAB_SIZE = 256

HANDWRITTEN = """
The quick brown fox jumps over the lazy dog.
A small model can still learn useful patterns from text.
Paris is the capital and largest city of France.
Berlin is the capital of Germany and Rome is the capital of Italy.
The weather tomorrow will be cold and rainy in the north.
It will be warm and sunny in the south for the rest of the week.
Retrieval augmented generation first searches a collection of documents.
The reranker reads the query and the passage together and outputs one relevance score.
A cross encoder is slower than a bi encoder but usually more accurate.
Embedding models turn sentences into vectors that can be compared with cosine similarity.
The best pizza in town is sold by a small shop near the station.
Language models write answers one token at a time.
Each service exposes a simple HTTP interface with JSON requests and responses.
The gateway calls the embedder, the retriever, the reranker and the generator in order.
Short answers grounded in facts are easier to check than long ones.
Students read books in the library every afternoon.
The train to the airport leaves every twenty minutes.
My grandmother bakes bread on Sunday mornings.
Cats sleep for most of the day and play at night.
The river flows through the valley towards the sea.
We planted tomatoes, beans and potatoes in the garden.
The museum opens at nine and closes at six.
Good documentation makes a project much easier to use.
The team fixed the bug and released a new version.
Rain fell all night and the streets were wet in the morning.
She asked a question and he answered it quickly.
How do cross encoders rank passages?
What is the capital of France?
Where can I buy fresh coffee beans?
Why is the sky blue during the day?
Which passage answers the question best?
Numbers like 3, 42 and 2024 appear in many documents.
Don't forget to save your work before you leave.
They're testing the new encoder on a few hundred sentences.
The tokenizer splits rare words into smaller pieces.
Mountains are covered with snow in winter.
The children played football in the park after school.
Fresh water is important for every living thing.
The doctor told him to drink more water and sleep more.
A good search engine finds relevant documents quickly.
""".strip().splitlines()

SUBJECTS = [
    "the teacher", "a student", "the old man", "my friend", "the doctor", "a farmer", "the engineer",
    "our neighbour", "the writer", "a tourist", "the children", "the manager", "the cook", "a scientist",
]
VERBS = [
    "reads", "writes", "finds", "searches", "explains", "answers", "builds", "opens", "cleans",
    "describes", "ranks", "compares", "collects", "carries", "visits", "remembers",
]
OBJECTS = [
    "a long document", "the short answer", "every question", "the red book", "a new model",
    "the best passage", "some fresh bread", "the small garden", "the city map", "a cold drink",
    "the weather report", "the relevant facts", "a simple query", "the language lesson",
]
ENDINGS = [
    "in the morning", "after lunch", "before the meeting", "at the station", "near the river",
    "every day", "in the library", "with great care", "without any help", "on a rainy day",
    "in the north", "for the whole family", "during the summer", "at night",
]


def xlmr_corpus():
    rng = random.Random(CORPUS_SEED)
    generated = []
    for _ in range(260):
        s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(ENDINGS)}."
        generated.append(s[0].upper() + s[1:])
    return HANDWRITTEN + generated + [t for _, t in SINGLES[:2]] + [q for _, q, _ in PAIRS] + [p for _, _, p in PAIRS]


def xlmr_tokenizer():
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.UnigramTrainer(
        vocab_size=XLMR_VOCAB_SIZE,
        show_progress=False,
        special_tokens=XLMR_SPECIALS,
        unk_token="<unk>",
        max_piece_length=12,
    )
    tok.train_from_iterator(xlmr_corpus(), trainer=trainer)
    # The trainer is not reproducible bit for bit: (1) its scores wobble in the last bits from run
    # to run; (2) pieces with equal scores come out in hash-map order; (3) it appends the
    # characters it must keep but pruned as a tail scored base, base - 1e-4, base - 2e-4, ... in
    # hash-set order. So: give that tail the base score, round every score, and order the pieces
    # by (score descending, piece) after the special tokens. Reruns then write the same file.
    trained = json.loads(tok.to_str())["model"]
    n_special = len(XLMR_SPECIALS)
    specials = [(piece, 0.0) for piece, _ in trained["vocab"][:n_special]]
    learnt = [[piece, score] for piece, score in trained["vocab"][n_special:]]
    start = len(learnt) - 1
    while (
        start > 0
        and len(learnt[start - 1][0]) == 1
        and abs(learnt[start - 1][1] - learnt[start][1] - 1e-4) < 1e-7
    ):
        start -= 1
    for entry in learnt[start:]:
        entry[1] = learnt[start][1]
    pieces = sorted(((piece, round(score, 6)) for piece, score in learnt), key=lambda p: (-p[1], p[0]))
    tok.model = models.Unigram(specials + pieces, unk_id=XLMR_SPECIALS.index("<unk>"), byte_fallback=False)
    assert [tok.token_to_id(t) for t in XLMR_SPECIALS] == [0, 1, 2, 3, 4], [tok.token_to_id(t) for t in XLMR_SPECIALS]
    tok.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0 </s>:0",
        pair="<s>:0 $A:0 </s>:0 </s>:0 $B:0 </s>:0",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return tok


# ---------------------------------------------------------------------------------------------
# Models.


def randomize(model, seed):
    """Every parameter from N(0, STD); LayerNorm weights from 1 + N(0, STD)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32) * STD
            if name.endswith("LayerNorm.weight"):
                p.copy_(1.0 + noise)
            else:
                p.copy_(noise)


def bert_model(vocab_size):
    cfg = transformers.BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        pad_token_id=0,
        num_labels=1,
    )
    model = transformers.BertForSequenceClassification(cfg)
    randomize(model, BERT_SEED)
    return model


def xlmr_model(vocab_size):
    cfg = transformers.XLMRobertaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=66,
        type_vocab_size=1,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=1,
    )
    model = transformers.XLMRobertaForSequenceClassification(cfg)
    randomize(model, XLMR_SEED)
    return model


def prepare(model):
    model.set_attn_implementation(ATTN)
    return model.to(torch.float32).eval()


# ---------------------------------------------------------------------------------------------
# expected.json


def floats(t):
    return [float(x) for x in t.reshape(-1).tolist()]


def compute_items(tok, base, clf):
    """`base`: the encoder (AutoModel-like), `clf`: the sequence-classification model."""
    items = []
    with torch.no_grad():
        for name, text in SINGLES:
            enc = tok.encode(text)
            ids = torch.tensor([enc.ids], dtype=torch.long)
            tt = torch.tensor([enc.type_ids], dtype=torch.long)
            hidden = base(input_ids=ids, token_type_ids=tt, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
            items.append(
                {
                    "id": name,
                    "text": text,
                    "tokens": enc.tokens,
                    "input_ids": enc.ids,
                    "mean": floats(hidden.mean(dim=0)),
                    "cls": floats(hidden[0]),
                }
            )
        for name, query, passage in PAIRS:
            enc = tok.encode(query, passage)
            ids = torch.tensor([enc.ids], dtype=torch.long)
            tt = torch.tensor([enc.type_ids], dtype=torch.long)
            logits = clf(input_ids=ids, token_type_ids=tt, attention_mask=torch.ones_like(ids)).logits
            assert logits.shape == (1, 1)
            items.append(
                {
                    "id": name,
                    "query": query,
                    "passage": passage,
                    "tokens": enc.tokens,
                    "input_ids": enc.ids,
                    "token_type_ids": enc.type_ids,
                    "logit": float(logits[0, 0]),
                }
            )
    return items


def dump_expected(path, header, items):
    lines = ["{"]
    for k, v in header.items():
        lines.append(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},")
    lines.append('  "items": [')
    for i, item in enumerate(items):
        comma = "," if i + 1 < len(items) else ""
        lines.append("    " + json.dumps(item, ensure_ascii=False) + comma)
    lines.append("  ]")
    lines.append("}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def header(arch, model):
    cfg = model.config
    return {
        "model": arch,
        "description": "random weights N(0, 0.2), LayerNorm weights 1 + N(0, 0.2); written by scripts/gen-tiny-encoders.py",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "tokenizers_version": tokenizers.__version__,
        "attn_implementation": ATTN,
        "dtype": "float32",
        "pooling": "mean = last_hidden_state averaged over every token ([CLS]/<s> and [SEP]/</s> included); "
        "cls = last_hidden_state[0]; logit = sequence-classification output, num_labels = 1",
        "hidden_size": cfg.hidden_size,
        "max_position_embeddings": cfg.max_position_embeddings,
    }


# ---------------------------------------------------------------------------------------------
# Writing.


def max_input_tokens(cfg):
    """RoBERTa-family position ids start at pad_token_id + 1, so fewer tokens fit."""
    offset = cfg["pad_token_id"] + 1 if cfg["model_type"] == "xlm-roberta" else 0
    return cfg["max_position_embeddings"] - offset


def save_dir(path, model, tok, tok_kwargs):
    os.makedirs(path, exist_ok=True)
    for f in os.listdir(path):
        os.remove(os.path.join(path, f))
    model.save_pretrained(path, safe_serialization=True)
    max_tokens = max_input_tokens(model.config.to_dict())
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=max_tokens, **tok_kwargs)
    fast.save_pretrained(path)
    # The tokenizer.json the Rust side reads is the one built here, byte for byte (compact, to keep
    # the fixture small); drop the extras save_pretrained may add.
    tok.save(os.path.join(path, "tokenizer.json"), pretty=False)
    for extra in ("special_tokens_map.json", "chat_template.jinja"):
        p = os.path.join(path, extra)
        if os.path.exists(p):
            os.remove(p)
    for f in os.listdir(path):
        os.chmod(os.path.join(path, f), 0o644)  # save_pretrained writes the weights 0600


# The model inputs of BertTokenizer: transformers passes a pair's segment ids to the model only
# when its tokenizer lists token_type_ids (the generic class it would save otherwise does not).
BERT_TOK_KWARGS = dict(
    unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]",
    model_input_names=["input_ids", "token_type_ids", "attention_mask"],
)
XLMR_TOK_KWARGS = dict(
    bos_token="<s>", eos_token="</s>", unk_token="<unk>", sep_token="</s>", pad_token="<pad>", cls_token="<s>", mask_token="<mask>"
)


def generate():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    tok = bert_tokenizer()
    model = prepare(bert_model(tok.get_vocab_size(with_added_tokens=True)))
    path = os.path.join(OUT, "bert")
    save_dir(path, model, tok, BERT_TOK_KWARGS)
    dump_expected(os.path.join(path, "expected.json"), header("bert", model), compute_items(tok, model.bert, model))

    tok = xlmr_tokenizer()
    model = prepare(xlmr_model(tok.get_vocab_size(with_added_tokens=True)))
    path = os.path.join(OUT, "xlm-roberta")
    save_dir(path, model, tok, XLMR_TOK_KWARGS)
    dump_expected(
        os.path.join(path, "expected.json"), header("xlm-roberta", model), compute_items(tok, model.roberta, model)
    )


# ---------------------------------------------------------------------------------------------
# Independent NumPy forward pass (float64), straight from the safetensors tensors.


def _ln(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


_erf = np.vectorize(math.erf)


def _gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def np_encoder(w, prefix, cfg, ids, type_ids, arch):
    w64 = lambda name: w[prefix + name].astype(np.float64)  # noqa: E731
    n, h, heads = len(ids), cfg["hidden_size"], cfg["num_attention_heads"]
    dh = h // heads
    if arch == "bert":
        pos = np.arange(n)
    else:  # RoBERTa family: positions count from pad_token_id + 1 (no padding here)
        pos = np.arange(n) + cfg["pad_token_id"] + 1
    x = (
        w64("embeddings.word_embeddings.weight")[ids]
        + w64("embeddings.position_embeddings.weight")[pos]
        + w64("embeddings.token_type_embeddings.weight")[type_ids]
    )
    eps = cfg["layer_norm_eps"]
    x = _ln(x, w64("embeddings.LayerNorm.weight"), w64("embeddings.LayerNorm.bias"), eps)
    lin = lambda x, name: x @ w64(name + ".weight").T + w64(name + ".bias")  # noqa: E731
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q = lin(x, p + "attention.self.query").reshape(n, heads, dh).transpose(1, 0, 2)
        k = lin(x, p + "attention.self.key").reshape(n, heads, dh).transpose(1, 0, 2)
        v = lin(x, p + "attention.self.value").reshape(n, heads, dh).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(dh)
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(1, 0, 2).reshape(n, h)
        a = lin(ctx, p + "attention.output.dense")
        x = _ln(x + a, w64(p + "attention.output.LayerNorm.weight"), w64(p + "attention.output.LayerNorm.bias"), eps)
        m = _gelu(lin(x, p + "intermediate.dense"))
        m = lin(m, p + "output.dense")
        x = _ln(x + m, w64(p + "output.LayerNorm.weight"), w64(p + "output.LayerNorm.bias"), eps)
    return x, lin


def np_logit(w, cfg, ids, type_ids, arch):
    if arch == "bert":
        x, lin = np_encoder(w, "bert.", cfg, ids, type_ids, arch)
        pooled = np.tanh(x[0] @ w["bert.pooler.dense.weight"].astype(np.float64).T + w["bert.pooler.dense.bias"])
        return float((pooled @ w["classifier.weight"].astype(np.float64).T + w["classifier.bias"])[0])
    x, lin = np_encoder(w, "roberta.", cfg, ids, type_ids, arch)
    d = np.tanh(x[0] @ w["classifier.dense.weight"].astype(np.float64).T + w["classifier.dense.bias"])
    return float((d @ w["classifier.out_proj.weight"].astype(np.float64).T + w["classifier.out_proj.bias"])[0])


# ---------------------------------------------------------------------------------------------
# Verification.


def check_dir(arch):
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    path = os.path.join(OUT, arch)
    prefix = "bert." if arch == "bert" else "roberta."
    with open(os.path.join(path, "expected.json"), encoding="utf-8") as f:
        expected = json.load(f)
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    raw = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    raw.no_padding()
    raw.no_truncation()
    auto_tok = transformers.AutoTokenizer.from_pretrained(path)
    extra = {} if arch == "bert" else {"add_pooling_layer": False}
    base = transformers.AutoModel.from_pretrained(path, attn_implementation=ATTN, dtype=torch.float32, **extra).eval()
    clf = transformers.AutoModelForSequenceClassification.from_pretrained(
        path, attn_implementation=ATTN, dtype=torch.float32
    ).eval()
    w = load_file(os.path.join(path, "model.safetensors"))
    for name, t in w.items():
        assert t.dtype == np.float32, (name, t.dtype)

    recomputed = {it["id"]: it for it in compute_items(raw, base, clf)}
    worst = 0.0
    for item in expected["items"]:
        got = recomputed[item["id"]]
        if "text" in item:
            enc = raw.encode(item["text"])
            hf = auto_tok(item["text"])
            assert enc.ids == item["input_ids"] == hf["input_ids"], (arch, item["id"], enc.ids, hf["input_ids"])
            assert enc.tokens == item["tokens"]
            assert len(enc.ids) <= max_input_tokens(cfg)
            for key in ("mean", "cls"):
                assert got[key] == item[key], (arch, item["id"], key, "not bit-identical after reload")
            x, _ = np_encoder(w, prefix, cfg, np.array(enc.ids), np.array(enc.type_ids), arch)
            worst = max(worst, np.abs(x.mean(0) - item["mean"]).max(), np.abs(x[0] - item["cls"]).max())
        else:
            enc = raw.encode(item["query"], item["passage"])
            hf = auto_tok(item["query"], item["passage"])
            assert enc.ids == item["input_ids"] == hf["input_ids"], (arch, item["id"], enc.ids, hf["input_ids"])
            assert enc.type_ids == item["token_type_ids"], (arch, item["id"], enc.type_ids)
            assert len(enc.ids) <= max_input_tokens(cfg)
            if "token_type_ids" in hf:
                assert hf["token_type_ids"] == item["token_type_ids"], (arch, item["id"], hf["token_type_ids"])
            assert got["logit"] == item["logit"], (arch, item["id"], "logit not bit-identical after reload")
            ref = np_logit(w, cfg, np.array(enc.ids), np.array(enc.type_ids), arch)
            worst = max(worst, abs(ref - item["logit"]))
    assert worst < NUMPY_TOL, (arch, "numpy reference disagrees", worst)
    means = [abs(v) for it in expected["items"] if "mean" in it for v in it["mean"]]
    print(
        f"{arch}: {len(expected['items'])} items reproduce exactly after reload; tokenizer.json ids == expected "
        f"== AutoTokenizer; float64 numpy forward max |diff| = {worst:.3g}; mean |mean-vector value| = "
        f"{sum(means) / len(means):.3f}; logits = {[it['logit'] for it in expected['items'] if 'logit' in it]}"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="only verify the files on disk")
    args = ap.parse_args()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if not args.check:
        generate()
    for arch in ("bert", "xlm-roberta"):
        check_dir(arch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
