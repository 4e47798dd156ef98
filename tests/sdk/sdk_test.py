"""The clients our users bring, unmodified, against the real services: the OpenAI Python SDK and
LangChain's `langchain-openai` (both from PyPI, pinned in scripts/dev/sdk.sh), pointed at the llm,
embedding and chatqna services that `comps up` starts (SmolLM2 and MiniLM, free loopback ports).

Covered: chat (whole, streamed, with usage), legacy completions (whole and streamed), embeddings
(float and the SDK's default base64, 1,000 inputs in one call, `dimensions`), the models list,
and errors: a bad field is the SDK's `BadRequestError` (400) naming the parameter, an unknown model
its `NotFoundError`; through LangChain: `ChatOpenAI`, `OpenAI` and `OpenAIEmbeddings`.

  .venv-sdk/bin/python tests/sdk/sdk_test.py --bin target/debug

Prints one line per check and exits non-zero when any failed. Only loopback is a target."""

import argparse
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import openai
from langchain_openai import ChatOpenAI, OpenAI, OpenAIEmbeddings

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "bench"))
from benchlib import ChatQnA  # noqa: E402

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def client(url):
    # The SDK retries 5xx and 429 by itself; a test sees the first answer.
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)


def served_model(c):
    models = c.models.list().data
    assert models, "GET /v1/models lists no model"
    return models[0].id


def expect_error(kind, call, param=None):
    try:
        call()
    except kind as e:
        if param is not None:
            body = e.body if isinstance(e.body, dict) else {}
            got = body.get("param") or (body.get("error") or {}).get("param")
            assert got == param, f"{kind.__name__} names {got!r}, not {param!r}: {e}"
        return e
    raise AssertionError(f"no {kind.__name__} raised")


@check
def chat_whole_and_streamed(urls):
    c = client(urls["llm"])
    model = served_model(c)
    r = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say hello."}],
                                  max_tokens=8, temperature=0, seed=7)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant", r
    assert r.choices[0].message.content and r.usage.completion_tokens <= 8, r
    assert r.choices[0].finish_reason in ("stop", "length"), r
    text, usage = "", None
    ask = [{"role": "user", "content": "Count to five."}]
    for chunk in c.chat.completions.create(model=model, messages=ask, max_tokens=8, temperature=0, stream=True,
                                           stream_options={"include_usage": True}):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert usage is not None and 0 < usage.completion_tokens <= 8, usage
    # Greedy: the stream says what the whole answer says.
    whole = c.chat.completions.create(model=model, messages=ask, max_tokens=8, temperature=0)
    assert text == whole.choices[0].message.content, (text, whole)


@check
def legacy_completions(urls):
    c = client(urls["llm"])
    model = served_model(c)
    r = c.completions.create(model=model, prompt="The capital of France is", max_tokens=6, temperature=0)
    assert r.object == "text_completion" and r.id.startswith("cmpl-"), r
    assert r.choices[0].text and r.choices[0].finish_reason in ("stop", "length"), r
    assert r.usage.prompt_tokens > 0 and 0 < r.usage.completion_tokens <= 6, r.usage
    # Greedy, so the stream says exactly what the whole answer said.
    pieces, finish = [], None
    for chunk in c.completions.create(model=model, prompt="The capital of France is", max_tokens=6,
                                      temperature=0, stream=True):
        pieces.append(chunk.choices[0].text)
        finish = chunk.choices[0].finish_reason or finish
    assert "".join(pieces) == r.choices[0].text and finish == r.choices[0].finish_reason, (pieces, r)
    # The default budget is OpenAI's 16 tokens.
    d = c.completions.create(model=model, prompt="Once upon a time", temperature=0, extra_body={"ignore_eos": True})
    assert d.usage.completion_tokens == 16, d.usage
    expect_error(openai.BadRequestError, lambda: c.completions.create(model=model, prompt="x", logprobs=2),
                 "logprobs")
    expect_error(openai.BadRequestError, lambda: c.completions.create(model=model, prompt=[1, 2, 10 ** 9]), "prompt")


@check
def embeddings_float_base64_and_a_thousand(urls):
    c = client(urls["embedding"])
    model = served_model(c)
    f = c.embeddings.create(model=model, input="hello world", encoding_format="float")
    b = c.embeddings.create(model=model, input="hello world")  # the SDK asks for base64
    va, vb = f.data[0].embedding, b.data[0].embedding
    assert len(va) == 384 and len(vb) == 384, (len(va), len(vb))
    assert max(abs(x - y) for x, y in zip(va, vb)) < 1e-6
    assert abs(math.sqrt(sum(x * x for x in va)) - 1) < 1e-3
    texts = [f"sentence number {i} about {['boats', 'tea', 'rain', 'maps'][i % 4]}" for i in range(1000)]
    t0 = time.time()
    many = c.embeddings.create(model=model, input=texts)
    assert [d.index for d in many.data] == list(range(1000)), "rows out of order"
    assert many.usage.prompt_tokens > 1000
    # Row i is text i: the same text embedded alone matches.
    alone = c.embeddings.create(model=model, input=texts[517]).data[0].embedding
    assert max(abs(x - y) for x, y in zip(alone, many.data[517].embedding)) < 1e-4
    print(f"    1,000 inputs in one call: {time.time() - t0:.1f} s", flush=True)
    short = c.embeddings.create(model=model, input="hi", dimensions=64).data[0].embedding
    assert len(short) == 64
    expect_error(openai.BadRequestError, lambda: c.embeddings.create(model=model, input=[]), "input")
    expect_error(openai.BadRequestError, lambda: c.embeddings.create(model=model, input="x", dimensions=4096),
                 "dimensions")


@check
def errors_are_the_sdks_exceptions(urls):
    c = client(urls["llm"])
    model = served_model(c)
    e = expect_error(openai.BadRequestError, lambda: c.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], temperature=7), "temperature")
    assert e.status_code == 400 and "temperature" in str(e), e
    e = expect_error(openai.BadRequestError, lambda: c.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=-1), "max_tokens")
    assert "u32" not in str(e), f"a Rust type in the message: {e}"
    expect_error(openai.NotFoundError, lambda: c.chat.completions.create(
        model="no-such-model", messages=[{"role": "user", "content": "hi"}]), "model")
    cq = client(urls["chatqna"])
    expect_error(openai.BadRequestError, lambda: cq.chat.completions.create(
        model="chatqna", messages=[{"role": "user", "content": "hi"}], top_p=3), "top_p")


@check
def chatqna_as_an_openai_model(urls):
    c = client(urls["chatqna"])
    r = c.chat.completions.create(model="chatqna", messages=[{"role": "user", "content": "Where is Korvath harbour?"}],
                                  max_tokens=16, temperature=0)
    assert r.choices[0].message.content, r
    text = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
        model="chatqna", messages=[{"role": "user", "content": "Where is Korvath harbour?"}], max_tokens=16,
        temperature=0, stream=True) if ch.choices)
    assert text, "an empty stream"


@check
def langchain_chat_completions_and_embeddings(urls):
    model = served_model(client(urls["llm"]))
    chat = ChatOpenAI(base_url=f"{urls['llm']}/v1", api_key="unused", model=model, max_tokens=8, temperature=0,
                      max_retries=0)
    msg = chat.invoke("Say hello.")
    assert msg.content and msg.response_metadata.get("finish_reason") in ("stop", "length"), msg
    streamed = "".join(str(ch.content) for ch in chat.stream("Say hello."))
    assert streamed == msg.content, (streamed, msg.content)
    llm = OpenAI(base_url=f"{urls['llm']}/v1", api_key="unused", model=model, max_tokens=6, temperature=0,
                 max_retries=0)
    assert llm.invoke("The capital of France is"), "OpenAI (completions) answered nothing"
    emb_model = served_model(client(urls["embedding"]))
    # check_embedding_ctx_length=False: otherwise LangChain fetches tiktoken's tables from the network.
    emb = OpenAIEmbeddings(base_url=f"{urls['embedding']}/v1", api_key="unused", model=emb_model,
                           check_embedding_ctx_length=False, max_retries=0)
    docs = emb.embed_documents(["tea", "rain", "maps"])
    query = emb.embed_query("tea")
    assert len(docs) == 3 and len(query) == 384
    assert max(abs(x - y) for x, y in zip(query, docs[0])) < 1e-4
    rag = ChatOpenAI(base_url=f"{urls['chatqna']}/v1", api_key="unused", model="chatqna", max_tokens=16,
                     temperature=0, max_retries=0)
    assert rag.invoke("Where is Korvath harbour?").content


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=str(ROOT / "target" / "debug"), help="the build to run (comps included)")
    args = ap.parse_args()
    models = Path(os.environ.get("MODELS_DIR", ROOT / "models"))
    up = ["--embedding-model", models / "all-MiniLM-L6-v2", "--llm-model", models / "SmolLM2-135M-Instruct",
          "--no-guardrail"]
    failed = 0
    with tempfile.TemporaryDirectory(prefix="comps-sdk-") as work, \
            ChatQnA(work, up, timeout=600, bin_dir=args.bin) as urls:
        print(f"openai {openai.__version__} against {urls['llm']} (llm), {urls['embedding']} (embedding), "
              f"{urls['chatqna']} (chatqna)", flush=True)
        for fn in CHECKS:
            t0 = time.time()
            try:
                fn(urls)
                print(f"  ok    {fn.__name__} ({time.time() - t0:.1f} s)", flush=True)
            except Exception:
                failed += 1
                print(f"  FAIL  {fn.__name__}\n{traceback.format_exc()}", flush=True)
    print(f"sdk tests: {len(CHECKS) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
