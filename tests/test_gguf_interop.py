"""llama.cpp itself runs tinyseek's GGUF export as tinyseek runs the checkpoint (opt-in: `make interop`).

Needs llama-cpp-python (a build of llama.cpp, ~13 minutes on 2 cores), which `make interop` installs into its own
venv (.venv-interop) and runs through tests/llama_cpp_runner.py, so `make test` never waits for it. What is
compared, each on the f32 export with an f32 KV cache on llama.cpp's side:

- logits of random models over every shape of config the export writes (q LoRA or not, dense or MoE, expert
  groups, sigmoid or softmax routing, YaRN): llama.cpp's equal tinyseek's to float32 noise;
- tokenization: the token ids of held-out prompts and of varied texts (digits, whitespace runs, other scripts,
  special tokens), for the pre-tokenizer written ("smollm") and, to show why it is the one, for the names a user
  would guess ("gpt-2", "qwen2", "deepseek-v3");
- the chat template, rendered by llama.cpp's built-in template code;
- greedy continuations of held-out prompts of a trained checkpoint (INTEROP_CKPT, prompts from INTEROP_PROMPTS
  in the template INTEROP_TEMPLATE): the same tokens as tinyseek's engine, or a divergence only where tinyseek's
  top two logits are a near tie.

INTEROP_REPORT names a JSON file the measured numbers are written to (dev/LOG.md and the README quote them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tinyseek import gguf_export
from tinyseek.checkpoint import read_config, read_weights, save_checkpoint
from tinyseek.config import ModelConfig
from tinyseek.gguf_export import write_gguf
from tinyseek.model import Transformer
from tinyseek.r1 import BOS, R1_ZERO_TEMPLATE, render_chat
from tinyseek.tokenizer import Tokenizer

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[1]
LLAMA_PYTHON = os.environ.get("TINYSEEK_LLAMA_PYTHON", str(ROOT / ".venv-interop" / "bin" / "python"))
RUNNER = Path(__file__).with_name("llama_cpp_runner.py")
REPORT: dict = {}

CONFIGS = {
    "nano: q LoRA, 2 groups (1 kept), sigmoid, 1 dense layer": {},
    "no q LoRA, all MoE, 4 groups (2 kept), route scale": dict(
        q_lora_rank=0, n_dense_layers=0, n_expert_groups=4, n_limited_groups=2, route_scale=2.5
    ),
    "softmax routing": dict(score_func="softmax", n_expert_groups=1, n_limited_groups=1),
    "YaRN (context 4x the original)": dict(
        max_seq_len=128, original_seq_len=32, rope_factor=4.0, mscale=0.7, beta_fast=16, beta_slow=2
    ),
    "dense": dict(n_routed_experts=0, n_shared_experts=0, n_activated_experts=0, n_dense_layers=3),
}

# texts whose split differs between pre-tokenizers: digits among letters, spaces and newlines; whitespace runs
# before digits; punctuation before words; contractions; other scripts; numerals that are not ASCII digits
VARIED = [
    "12+34=46",
    "x  1 and y   22",
    "a\n 12\n\n345\t6",
    "Hello, world! It's 2026; don't panic.",
    ".abc ,def 'quoted' \"double\"",
    "trailing spaces   ",
    "  leading spaces",
    "line one\nline two\r\nline three\n\n\nend",
    "数学：一加一等于二。1+1=2",
    "naïve café — ½ ² ³ ١٢٣ １２３",
    "emoji 😀 and 👍🏽 too",
    "<think>\n1+2=3\n</think>\n<answer>3</answer>",
    "<｜User｜>What is 7*8?<｜Assistant｜>",
    "tabs\tand\ttabs\t\t9",
    "3.14159 and 1,000,000 and -42",
    "mixedCASE words and ALLCAPS and snake_case_9",
]


@pytest.fixture(scope="module", autouse=True)
def report():
    """The numbers measured, written to INTEROP_REPORT (JSON) once every test of the module has run."""
    yield REPORT
    if path := os.environ.get("INTEROP_REPORT"):
        Path(path).write_text(json.dumps(REPORT, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def fuzz_texts(n: int = 300, seed: int = 0) -> list[str]:
    """Random strings over the characters pre-tokenizers disagree on (seeded: the same texts every run)."""
    import random

    rng = random.Random(seed)
    atoms = list("0123456789 abcXYZ.,;:'!?-+=()\n\t") + [
        "  ",
        "\n\n",
        " 1",
        "'s",
        "½",
        "²",
        "１",
        "数",
        "😀",
        "é",
        "<think>",
    ]
    return ["".join(rng.choice(atoms) for _ in range(rng.randint(1, 40))) for _ in range(n)]


def llama_cpp(job: dict, tmp_path: Path) -> dict:
    """Run tests/llama_cpp_runner.py on `job` in the llama-cpp-python venv; its JSON answer."""
    if not Path(LLAMA_PYTHON).exists():
        pytest.fail(f"{LLAMA_PYTHON}: no llama-cpp-python venv (make interop builds it)")
    jf, of = tmp_path / "job.json", tmp_path / "out.json"
    jf.write_text(json.dumps(job), encoding="utf-8")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([LLAMA_PYTHON, str(RUNNER), str(jf), str(of)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(of.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def varied_tokenizer(tmp_path_factory):
    """A tokenizer trained on whitespace-rich, mixed-script text, so that its merges include whitespace runs and
    multi-byte characters (a task tokenizer may not have them, and then every pre-tokenizer would look right)."""
    texts = [t * 3 for t in VARIED] * 20 + [f"{a}  +  {b} = {a + b}\n\n" for a in range(50) for b in range(20)]
    return Tokenizer.train(texts, 700).save(tmp_path_factory.mktemp("tok"))


@pytest.mark.parametrize("case", list(CONFIGS))
def test_llama_cpp_gives_tinyseeks_logits(tmp_path, varied_tokenizer, case):
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("nano", vocab_size=700, **CONFIGS[case])).eval()
    with torch.no_grad():
        for blk in model.moe_blocks:
            blk.gate.bias.copy_(torch.randn_like(blk.gate.bias) * 0.05)
    ckpt = save_checkpoint(model, tmp_path / "ckpt", tokenizer_file=varied_tokenizer)
    write_gguf(read_config(ckpt), read_weights(ckpt), varied_tokenizer, tmp_path / "m.gguf")
    ids = torch.randint(9, 700, (1, 100), generator=torch.Generator().manual_seed(1))
    ids[0, 0] = 0  # BOS
    with torch.no_grad():
        want = model(ids).logits[0].double()
    got = torch.tensor(llama_cpp({"model": str(tmp_path / "m.gguf"), "n_ctx": 128, "logits": [ids[0].tolist()]},
                                 tmp_path)["logits"][0], dtype=torch.float64)  # fmt: skip
    err = (got - want).abs().max().item()
    REPORT.setdefault("logits_max_abs_diff", {})[case] = err
    assert err < 1e-3 * want.abs().max().item(), f"{case}: llama.cpp's logits differ from tinyseek's by {err:.3g}"
    assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_tokenization_and_the_pre_tokenizer_choice(tmp_path, varied_tokenizer, monkeypatch):
    """llama.cpp's token ids equal tinyseek's for every varied text under "smollm"; the other names do not."""
    tok = Tokenizer.load(varied_tokenizer)
    cfg = ModelConfig.preset("nano", vocab_size=tok.vocab_size)
    sd = Transformer(cfg).state_dict()
    texts = VARIED + fuzz_texts()
    want = [tok.encode(t, add_special=True) for t in texts]
    mismatches = {}
    for pre in ("smollm", "gpt-2", "qwen2", "deepseek-v3"):
        monkeypatch.setattr(gguf_export, "PRE_TOKENIZER", pre)
        write_gguf(cfg, sd, varied_tokenizer, tmp_path / f"{pre}.gguf")
        got = llama_cpp({"model": str(tmp_path / f"{pre}.gguf"), "vocab_only": True, "tokenize": texts}, tmp_path)
        mismatches[pre] = [t for t, g, w in zip(texts, got["tokens"], want) if g != w]
    REPORT["pre_tokenizer_mismatches"] = {k: f"{len(v)} of {len(texts)}" for k, v in mismatches.items()}
    REPORT["pre_tokenizer_mismatch_examples"] = {k: v[:3] for k, v in mismatches.items()}
    assert mismatches["smollm"] == []
    assert all(mismatches[k] for k in ("gpt-2", "qwen2", "deepseek-v3")), mismatches  # the test tells them apart


def _trained() -> tuple[Path, list[str], list[dict]]:
    ckpt = Path(os.environ.get("INTEROP_CKPT", ROOT / "runs/r1-zero/grpo/final"))
    prompts = Path(os.environ.get("INTEROP_PROMPTS", ROOT / "runs/r1-zero/tasks/test.jsonl"))
    template = os.environ.get("INTEROP_TEMPLATE", "r1-zero")
    n = int(os.environ.get("INTEROP_N", "50"))
    if not (ckpt / "config.json").is_file() or not prompts.is_file():
        pytest.fail(
            f"{ckpt} or {prompts}: no trained checkpoint / held-out prompts (set INTEROP_CKPT, INTEROP_PROMPTS)"
        )
    rows = [json.loads(line) for line in prompts.read_text(encoding="utf-8").splitlines() if line.strip()][:n]
    if template == "r1-zero":
        texts = [BOS + R1_ZERO_TEMPLATE.format(prompt=r["prompt"]) for r in rows]
    elif template == "chat":
        texts = [render_chat([{"role": "user", "content": r["prompt"]}]) for r in rows]
    else:
        texts = [BOS + r["prompt"] for r in rows]
    return ckpt, texts, rows


def test_trained_model_greedy_tokens_and_tokenization_match(tmp_path):
    from tinyseek.checkpoint import load
    from tinyseek.inference.engine import Engine
    from tinyseek.inference.sampling import SamplingParams

    ckpt, texts, rows = _trained()
    out = tmp_path / "model.gguf"
    assert subprocess.run([sys.executable, "-m", "tinyseek.cli", "export", str(ckpt), "--format", "gguf", "--out",
                           str(out), "--dtype", "f32"], capture_output=True).returncode == 0  # fmt: skip
    loaded = load(ckpt)
    tok, model = loaded.tokenizer, loaded.model
    # the texts already hold BOS (the chat template writes it; the others have it prepended): tinyseek's ids
    prompts = [tok.encode(t) for t in texts]
    n_new = 96
    engine = Engine(model, tok, max_batch=len(prompts))
    params = SamplingParams(temperature=0.0, max_new_tokens=n_new, stop_token_ids=(tok.eos_id,))
    ours = [c[0].token_ids for c in engine.generate(prompts, params)]
    job = {
        "model": str(out),
        "n_ctx": model.cfg.max_seq_len,
        "tokenize": [t[len(BOS) :] for t in texts],  # llama.cpp adds BOS itself (add_bos_token)
        "detokenize": prompts,
        "generate": [{"ids": p, "max_tokens": n_new} for p in prompts],
        "chat": [[{"role": "user", "content": "12+34="}], [{"role": "user", "content": "Hi"},
                 {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "1+1="}]],
    }  # fmt: skip
    got = llama_cpp(job, tmp_path)

    token_equal = sum(g == w for g, w in zip(got["tokens"], prompts))
    assert got["texts"] == texts
    same = [g == w for g, w in zip(got["generated"], ours)]
    near_ties = []
    for g, w, p in zip(got["generated"], ours, prompts):
        if g != w:  # where they part, tinyseek's own top two logits must be a near tie (float noise decides it)
            k = next(i for i in range(min(len(g), len(w))) if g[i] != w[i])
            with torch.no_grad():
                top2 = model(torch.tensor([p + w[:k]])).logits[0, -1].topk(2).values
            near_ties.append((top2[0] - top2[1]).item())
    # the smaller files and llama.cpp's default f16 KV cache: measured for the record (rounding may flip a token)
    for dtype in ("bf16", "q8_0"):
        q = tmp_path / f"model-{dtype}.gguf"
        subprocess.run([sys.executable, "-m", "tinyseek.cli", "export", str(ckpt), "--format", "gguf", "--out", str(q),
                        "--dtype", dtype], capture_output=True, check=True)  # fmt: skip
        qgot = llama_cpp({**job, "model": str(q), "kv_cache": "f16", "tokenize": [], "chat": []}, tmp_path)
        REPORT[f"greedy_equal_{dtype}_f16_kv_cache"] = sum(g == w for g, w in zip(qgot["generated"], ours))
    answers = [tok.decode(g) for g in got["generated"]]
    correct = sum(f"<answer>{r['answer']}</answer>" in a for r, a in zip(rows, answers))
    REPORT.update(
        checkpoint=str(ckpt),
        prompts=len(prompts),
        tokenization_equal=token_equal,
        greedy_equal=sum(same),
        greedy_diverged_top2_gaps=near_ties,
        mean_new_tokens=sum(map(len, ours)) / len(ours),
        llama_cpp_python=got["llama_cpp_python"],
        chat_template_builtin=[c == render_chat(m)[len(BOS) :] for c, m in zip(got["chat"], job["chat"])],
        llama_cpp_answers_correct=correct,
    )
    assert token_equal == len(prompts)
    assert all(gap < 1e-3 for gap in near_ties), near_ties
    assert sum(same) >= 20
    assert all(REPORT["chat_template_builtin"]), got["chat"]
