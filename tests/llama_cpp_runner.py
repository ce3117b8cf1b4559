"""llama.cpp's side of `make interop`: run in the llama-cpp-python venv (.venv-interop), never imported by tinyseek.

`python llama_cpp_runner.py JOB.json OUT.json`: load the job's GGUF file in llama.cpp (f32 KV cache unless the job
says otherwise, one thread) and write what llama.cpp makes of it: token ids of texts (BOS added, special tokens
parsed), texts of token ids, greedy continuations of token-id prompts, the logits of every position of token-id
sequences, and chats rendered by llama.cpp's own template code (`llama_chat_apply_template`). It imports only
llama_cpp and the standard library, so the interop venv needs nothing of tinyseek's.
"""

from __future__ import annotations

import ctypes
import json
import sys


def main(job_file: str, out_file: str) -> None:
    import llama_cpp

    job = json.loads(open(job_file, encoding="utf-8").read())
    f16_cache = job.get("kv_cache") == "f16"
    kv = llama_cpp.GGML_TYPE_F16 if f16_cache else llama_cpp.GGML_TYPE_F32
    m = llama_cpp.Llama(
        job["model"],
        n_ctx=job.get("n_ctx", 256),
        n_batch=job.get("n_ctx", 256),
        n_threads=1,
        logits_all=bool(job.get("logits")),
        type_k=kv,
        type_v=kv,
        vocab_only=job.get("vocab_only", False),
        verbose=False,
    )
    out: dict = {"llama_cpp_python": llama_cpp.__version__}
    out["tokens"] = [m.tokenize(t.encode("utf-8"), add_bos=True, special=True) for t in job.get("tokenize", [])]
    out["texts"] = [m.detokenize(ids, special=True).decode("utf-8", "replace") for ids in job.get("detokenize", [])]
    eos = m.token_eos()
    generated = []
    for g in job.get("generate", []):
        ids: list[int] = []
        for t in m.generate(g["ids"], top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
            ids.append(int(t))
            if t == eos or len(ids) >= g["max_tokens"]:
                break
        generated.append(ids)
    out["generated"] = generated
    logits = []
    for ids in job.get("logits", []):
        m.reset()
        m.eval(ids)
        logits.append(m.scores[: len(ids)].tolist())
    out["logits"] = logits
    out["chat"] = [_apply_template(m, chat) for chat in job.get("chat", [])]
    open(out_file, "w", encoding="utf-8").write(json.dumps(out))


def _apply_template(m, chat: list[dict]) -> str | None:
    """The chat through llama.cpp's built-in template code, with the model's template; None when llama.cpp does not
    recognise the template."""
    import llama_cpp

    tmpl = llama_cpp.llama_model_chat_template(m.model, None)
    msgs = (llama_cpp.llama_chat_message * len(chat))(
        *[llama_cpp.llama_chat_message(c["role"].encode(), c["content"].encode()) for c in chat]
    )
    buf = ctypes.create_string_buffer(1 << 16)
    n = llama_cpp.llama_chat_apply_template(tmpl, msgs, len(chat), True, buf, len(buf))
    return buf.raw[:n].decode("utf-8") if n >= 0 else None


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
