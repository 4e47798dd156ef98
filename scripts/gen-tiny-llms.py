#!/usr/bin/env python3
"""Write tiny, randomly initialised Llama and Qwen2 chat checkpoints with known outputs.

    scripts/python-env.sh
    .venv/bin/python scripts/gen-tiny-llms.py            # generate, then verify
    .venv/bin/python scripts/gen-tiny-llms.py --check    # only verify what is on disk

The Rust (candle) LLM service is tested against these files, so it can prove its chat templating,
tokenization, forward pass and greedy decoding without downloading a real model. Everything is
made here from fixed seeds; a rerun writes the same bytes (with the same torch / transformers /
tokenizers versions).

Output, under services/llm/tests/fixtures/tiny-llms/:

    llama/   LlamaForCausalLM (the shape of SmolLM2): hidden 64, 2 layers, 4 heads, 2 KV heads
             (head_dim 16), intermediate 128, 256 positions, rope_theta 10000, rms_norm_eps 1e-5,
             untied lm_head; bos <|im_start|> (1), eos <|im_end|> (2).
    qwen2/   Qwen2ForCausalLM (the shape of Qwen2.5-Instruct): the same sizes, q/k/v biases,
             rms_norm_eps 1e-6, lm_head tied to the embeddings (so model.safetensors has no
             lm_head.weight); no bos token; eos <|im_end|> (2); generation_config.json lists
             eos_token_id [2, 0] (<|im_end|>, <|endoftext|>) like Qwen2.5 does.

Both use the same tokenizer: a byte-level BPE trained here on sentences written below (vocabulary
VOCAB_SIZE = 256 byte symbols + 3 special tokens + merges), special tokens <|endoftext|> = 0,
<|im_start|> = 1, <|im_end|> = 2, pre-tokenizer and decoder ByteLevel(add_prefix_space=False), no
normalizer, nothing added around a sequence. tokenizer_config.json carries a ChatML chat_template
(the one SmolLM2 uses, without its default system prompt).

Each directory holds config.json, generation_config.json, model.safetensors (float32),
tokenizer.json, tokenizer_config.json and reference.json. reference.json lists chat
conversations, each with the prompt the chat template renders (add_generation_prompt=True), its
token ids (no special tokens added), the logits at the last prompt position (the whole
vocabulary, rounded to 6 decimals; plus the argmax and the largest |logit|), and `greedy_ids`: 16
tokens chosen by argmax, one full forward pass over prompt + tokens so far per step, no KV cache,
no stopping at eos. `greedy_min_margin` is the smallest gap between the best and second-best logit
over those 16 steps, so a reimplementation knows how close a tie it has to reproduce.

All weights are drawn from N(0, 0.2) (RMSNorm weights from 1 + N(0, 0.2)), biases included, so
that every parameter matters and the logits are spread out (greedy decoding is then robust to
float32 rounding differences).

config.json is what transformers writes (which, since transformers 5, gives RoPE as
`rope_parameters` and, for Qwen2 without sliding-window attention, `sliding_window: null`), plus
the keys the pre-5 format had at the top level: `rope_theta` (both) and, for Qwen2, an integer
`sliding_window` (= max_position_embeddings, so it never masks anything) and `max_window_layers`
(= num_hidden_layers). Configs on the Hub (and readers such as candle-transformers) use those.

The check reloads each directory with AutoModelForCausalLM, AutoTokenizer and
tokenizers.Tokenizer.from_file, and requires: the chat template renders the same prompts (also
when rendered with plain jinja2), identical token ids, bit-identical last-position logits, the
same greedy tokens, and the same greedy tokens again when decoded incrementally with the KV cache.
"""

import argparse
import json
import os
import random
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import jinja2  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "services", "llm", "tests", "fixtures", "tiny-llms")

STD = 0.2
LLAMA_SEED = 20240611
QWEN2_SEED = 20240612
CORPUS_SEED = 11
ATTN = "eager"
VOCAB_SIZE = 400
NEW_TOKENS = 16
LOGIT_DECIMALS = 6
MIN_MARGIN = 1e-3  # greedy steps closer than this to a tie would make a poor test

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# ---------------------------------------------------------------------------------------------
# Conversations recorded in reference.json (the same for both models).

CONVERSATIONS = [
    ("single_user", [{"role": "user", "content": "What is the capital of France?"}]),
    (
        "system_user",
        [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Write one short sentence about the weather."},
        ],
    ),
    (
        "multi_turn_unicode",
        [
            {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "Hello! How can I help you today?"},
            {"role": "user", "content": "Tell me 3 facts about dogs, naïve café 🙂 please."},
        ],
    ),
]

# ---------------------------------------------------------------------------------------------
# Tokenizer: a byte-level BPE trained on the sentences below.

HANDWRITTEN = """
The quick brown fox jumps over the lazy dog.
What is the capital of France? The capital of France is Paris.
Berlin is the capital of Germany and Rome is the capital of Italy.
You are a helpful assistant. Answer the question in one short sentence.
You are a friendly assistant who answers questions about the weather.
Hello! How can I help you today?
Hi! I would like to know more about dogs and cats.
Dogs are loyal animals and many people keep them as pets.
Cats sleep for most of the day and hunt at night.
The weather tomorrow will be cold and rainy in the north.
It will be warm and sunny in the south for the rest of the week.
Please write a short poem about the sea.
Sure, here is a short poem about the sea and the sky.
Can you explain how a language model writes an answer?
A language model writes an answer one token at a time.
Each token is chosen from a vocabulary of words and pieces of words.
Thank you for your help, that was very useful.
You're welcome! Let me know if you have any other questions.
The train to the airport leaves every 20 minutes.
There are 7 days in a week and 12 months in a year.
My grandmother bakes bread on Sunday mornings.
Students read books in the library every afternoon.
The museum opens at 9 and closes at 5 on weekdays.
Water boils at 100 degrees and freezes at 0 degrees.
Tell me three facts about the moon.
The moon orbits the earth about once every 27 days.
Write one sentence about the weather in Paris.
It is raining in Paris today, so take an umbrella.
What time is it? It is half past four in the afternoon.
I don't know the answer, but I can try to find it.
Let's think step by step about this question.
First, read the question. Then, write the answer.
The service reads a JSON request and returns a JSON response.
A small model can still learn useful patterns from text.
"""

SUBJECTS = [
    "the assistant", "a user", "the system", "my friend", "the teacher", "a small dog", "the old cat",
    "our team", "the model", "the city of Paris", "a student", "the weather service",
]
VERBS = [
    "answers", "writes", "reads", "explains", "asks about", "remembers", "likes", "describes", "finds",
    "helps with", "talks about", "forgets",
]
OBJECTS = [
    "the question", "a short sentence", "the weather", "three facts", "the capital of France",
    "a poem about the sea", "the answer", "the request", "a list of 5 dogs", "the history of Rome",
    "the rainy days", "a helpful reply",
]
ENDINGS = [
    "today", "every morning", "in one sentence", "with care", "step by step", "before lunch",
    "after 10 minutes", "again and again", "for the user", "in the afternoon",
]
ROLES = ["system", "user", "assistant"]


def corpus():
    rng = random.Random(CORPUS_SEED)
    lines = [line for line in HANDWRITTEN.strip().split("\n")]
    for _ in range(300):
        s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(ENDINGS)}"
        s = s[0].upper() + s[1:] + rng.choice([".", ".", "!", "?"])
        lines.append(s)
    # Chat-shaped text, so the role names and the newlines around them become tokens.
    for i in range(60):
        role = ROLES[i % 3]
        lines.append(f"{role}\n{rng.choice(lines[:40])}\n")
    return lines


def bpe_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    assert [tok.token_to_id(t) for t in SPECIALS] == [0, 1, 2], [tok.token_to_id(t) for t in SPECIALS]
    assert tok.get_vocab_size(with_added_tokens=True) == VOCAB_SIZE, tok.get_vocab_size(with_added_tokens=True)
    return tok


def tokenizer_config(kind):
    """tokenizer_config.json, written by hand (transformers 5 would put the template in a separate
    chat_template.jinja)."""
    cfg = {
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(i): {
                "content": t,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for i, t in enumerate(SPECIALS)
        },
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": "<|im_start|>" if kind == "llama" else None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "model_max_length": 256,
        "pad_token": "<|im_end|>" if kind == "llama" else "<|endoftext|>",
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": "<|endoftext|>" if kind == "llama" else None,
    }
    return cfg


# ---------------------------------------------------------------------------------------------
# Models.


def randomize(model, seed):
    """Every parameter from N(0, STD); RMSNorm weights from 1 + N(0, STD). A tied lm_head is the
    embedding parameter itself, so it is drawn once."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32) * STD
            if name.endswith("norm.weight"):
                p.copy_(1.0 + noise)
            else:
                p.copy_(noise)


COMMON = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    hidden_act="silu",
    max_position_embeddings=256,
    rope_theta=10000.0,
)


def llama_model(vocab_size):
    cfg = transformers.LlamaConfig(
        vocab_size=vocab_size,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        **COMMON,
    )
    torch.manual_seed(LLAMA_SEED)
    model = transformers.LlamaForCausalLM(cfg)
    randomize(model, LLAMA_SEED)
    return model


def qwen2_model(vocab_size):
    cfg = transformers.Qwen2Config(
        vocab_size=vocab_size,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        use_sliding_window=False,
        bos_token_id=0,
        eos_token_id=2,
        **COMMON,
    )
    torch.manual_seed(QWEN2_SEED)
    model = transformers.Qwen2ForCausalLM(cfg)
    randomize(model, QWEN2_SEED)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model


def prepare(model):
    model.set_attn_implementation(ATTN)
    return model.to(torch.float32).eval()


def generation_config(kind):
    if kind == "llama":
        return transformers.GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=2)
    return transformers.GenerationConfig(bos_token_id=0, eos_token_id=[2, 0], pad_token_id=0)


# ---------------------------------------------------------------------------------------------
# reference.json


def render(messages):
    """The chat template through plain jinja2 (what a minimal reimplementation does)."""
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(CHAT_TEMPLATE).render(messages=messages, add_generation_prompt=True)


def last_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False).logits[0, -1]


def greedy(model, ids):
    """NEW_TOKENS argmax steps, each a full forward pass (no KV cache), no eos stopping."""
    ids = list(ids)
    out, margin = [], float("inf")
    for _ in range(NEW_TOKENS):
        logits = last_logits(model, ids)
        top2 = torch.topk(logits, 2)
        margin = min(margin, float(top2.values[0] - top2.values[1]))
        nxt = int(torch.argmax(logits))
        out.append(nxt)
        ids.append(nxt)
    return out, margin


def greedy_cached(model, ids):
    """The same greedy decode, incrementally with the KV cache (the way a server runs)."""
    out = []
    with torch.no_grad():
        res = model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=True)
        for _ in range(NEW_TOKENS):
            nxt = int(torch.argmax(res.logits[0, -1]))
            out.append(nxt)
            res = model(input_ids=torch.tensor([[nxt]], dtype=torch.long), cache=res.cache, use_cache=True)
    return out


def compute_items(tok, model):
    items = []
    for name, messages in CONVERSATIONS:
        prompt = render(messages)
        enc = tok.encode(prompt, add_special_tokens=False)
        logits = last_logits(model, enc.ids)
        gen, margin = greedy(model, enc.ids)
        items.append(
            {
                "id": name,
                "messages": messages,
                "prompt": prompt,
                "prompt_ids": enc.ids,
                "prompt_tokens": enc.tokens,
                "last_logits_argmax": int(torch.argmax(logits)),
                "last_logits_max_abs": float(logits.abs().max()),
                "greedy_ids": gen,
                "greedy_text": tok.decode(gen, skip_special_tokens=False),
                "greedy_min_margin": round(margin, 6),
                "last_logits": [round(float(x), LOGIT_DECIMALS) for x in logits],
            }
        )
    return items


def dump_reference(path, header, items):
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


def header(kind, model):
    cfg = model.config
    gen = generation_config(kind)
    return {
        "model": kind,
        "architecture": type(model).__name__,
        "description": "random weights N(0, 0.2), RMSNorm weights 1 + N(0, 0.2); written by scripts/gen-tiny-llms.py",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "tokenizers_version": tokenizers.__version__,
        "attn_implementation": ATTN,
        "dtype": "float32",
        "vocab_size": cfg.vocab_size,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "eos_token_id": gen.eos_token_id,
        "new_tokens": NEW_TOKENS,
        "logit_decimals": LOGIT_DECIMALS,
        "procedure": "prompt = chat_template(messages, add_generation_prompt=True); prompt_ids = tokenizer.json "
        "encode(prompt, add_special_tokens=False); last_logits = logits at the last prompt position; "
        "greedy_ids = 16 x (full forward pass over prompt + generated so far, no KV cache, argmax), "
        "no eos stopping",
    }


# ---------------------------------------------------------------------------------------------
# Writing.


def save_dir(path, kind, model, tok):
    os.makedirs(path, exist_ok=True)
    for f in os.listdir(path):
        os.remove(os.path.join(path, f))
    model.generation_config = generation_config(kind)
    model.save_pretrained(path, safe_serialization=True)
    # Add the pre-transformers-5 keys next to what transformers 5 writes (see the module docstring).
    cfg_path = os.path.join(path, "config.json")
    with open(cfg_path, encoding="utf-8") as f:
        cfg = json.load(f)
    assert cfg["rope_parameters"] == {"rope_theta": 10000.0, "rope_type": "default"}, cfg["rope_parameters"]
    cfg["rope_theta"] = cfg["rope_parameters"]["rope_theta"]
    if kind == "qwen2":
        assert cfg["use_sliding_window"] is False
        cfg["sliding_window"] = cfg["max_position_embeddings"]
        cfg["max_window_layers"] = cfg["num_hidden_layers"]
    with open(cfg_path, "w", encoding="utf-8") as f:
        f.write(json.dumps(dict(sorted(cfg.items())), indent=2) + "\n")
    tok.save(os.path.join(path, "tokenizer.json"), pretty=False)
    with open(os.path.join(path, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(tokenizer_config(kind), indent=2, ensure_ascii=False) + "\n")
    for f in os.listdir(path):
        os.chmod(os.path.join(path, f), 0o644)  # save_pretrained writes the weights 0600


def generate():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    tok = bpe_tokenizer()
    vocab = tok.get_vocab_size(with_added_tokens=True)
    for kind, build in (("llama", llama_model), ("qwen2", qwen2_model)):
        model = prepare(build(vocab))
        path = os.path.join(OUT, kind)
        save_dir(path, kind, model, tok)
        items = compute_items(tok, model)
        for item in items:
            assert item["greedy_min_margin"] > MIN_MARGIN, (kind, item["id"], item["greedy_min_margin"])
        dump_reference(os.path.join(path, "reference.json"), header(kind, model), items)


# ---------------------------------------------------------------------------------------------
# Verification.


def check_dir(kind):
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    path = os.path.join(OUT, kind)
    with open(os.path.join(path, "reference.json"), encoding="utf-8") as f:
        ref = json.load(f)
    raw = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    auto_tok = transformers.AutoTokenizer.from_pretrained(path)
    assert auto_tok.eos_token == "<|im_end|>" and auto_tok.eos_token_id == 2
    model = transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation=ATTN, dtype=torch.float32).eval()
    # Loaded tensors live in the mmapped safetensors file, not 64-byte aligned; torch's CPU kernels
    # can then round differently in the last bit. Copies in torch's own memory reproduce the
    # generating run bit for bit.
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.clone()
    assert type(model).__name__ == ref["architecture"], type(model).__name__
    assert model.config.rope_parameters["rope_theta"] == 10000.0
    gen = transformers.GenerationConfig.from_pretrained(path)
    assert gen.eos_token_id == ref["eos_token_id"]
    w = load_file(os.path.join(path, "model.safetensors"))
    for name, t in w.items():
        assert str(t.dtype) == "float32", (name, t.dtype)
    assert ("lm_head.weight" in w) == (not model.config.tie_word_embeddings)

    for item in ref["items"]:
        hf_prompt = auto_tok.apply_chat_template(item["messages"], tokenize=False, add_generation_prompt=True)
        assert hf_prompt == item["prompt"] == render(item["messages"]), (kind, item["id"], hf_prompt)
        ids = raw.encode(item["prompt"], add_special_tokens=False).ids
        hf_ids = auto_tok(item["prompt"], add_special_tokens=False)["input_ids"]
        assert ids == item["prompt_ids"] == hf_ids, (kind, item["id"], ids, hf_ids)
        assert raw.decode(ids, skip_special_tokens=False) == item["prompt"], (kind, item["id"], "decode round trip")
        logits = last_logits(model, ids)
        rounded = [round(float(x), LOGIT_DECIMALS) for x in logits]
        assert rounded == item["last_logits"], (kind, item["id"], "logits differ after reload")
        assert float(logits.abs().max()) == item["last_logits_max_abs"]
        out, _ = greedy(model, ids)
        assert out == item["greedy_ids"], (kind, item["id"], out)
        cached = greedy_cached(model, ids)
        assert cached == item["greedy_ids"], (kind, item["id"], "KV-cache decode differs", cached)
    sizes = {f: os.path.getsize(os.path.join(path, f)) for f in sorted(os.listdir(path))}
    print(
        f"{kind}: {len(ref['items'])} conversations reproduce after reload (template, ids, logits, greedy with and "
        f"without KV cache); prompt lengths {[len(it['prompt_ids']) for it in ref['items']]}; greedy min margins "
        f"{[it['greedy_min_margin'] for it in ref['items']]}; max |logit| "
        f"{[round(it['last_logits_max_abs'], 3) for it in ref['items']]}; files {sizes}"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="only verify the files on disk")
    args = ap.parse_args()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if not args.check:
        generate()
    for kind in ("llama", "qwen2"):
        check_dir(kind)
    return 0


if __name__ == "__main__":
    sys.exit(main())
