"""Shared fixtures."""

from __future__ import annotations

import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--interop",
        action="store_true",
        help="run the checks against llama.cpp itself (tests marked interop; make interop sets them up)",
    )


def pytest_collection_modifyitems(config, items):
    """Tests marked `interop` need llama.cpp (a 13-minute build): they run only under --interop (make interop)."""
    if config.getoption("--interop"):
        return
    skip = pytest.mark.skip(reason="needs llama.cpp: opt-in, run by make interop")
    for item in items:
        if "interop" in item.keywords:
            item.add_marker(skip)


# R1-format chats a tiny model learns by heart in a few seconds: enough for a real checkpoint that
# reasons (<think>...</think>) and answers (<answer>...</answer>) on cue.
R1_CHATS = [
    ("What is 2 plus 3?", "<think>\nAdd 2 and 3 to get 5.\n</think>\n<answer>5</answer>"),
    ("Say hi.", "<think>\nA greeting is asked for.\n</think>\n<answer>Hi there!</answer>"),
    ("What is 4 times 2?", "<think>\nFour twice is 8.\n</think>\n<answer>8</answer>"),
]


def tiny_llama(vocab_size: int = 64, hidden_size: int = 32, max_position_embeddings: int = 64):
    """A one-layer random transformers Llama: a stand-in for "any other transformers causal LM"."""
    import transformers

    cfg = transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
    )
    return transformers.LlamaForCausalLM(cfg)


@pytest.fixture(scope="session")
def r1_checkpoint(tmp_path_factory):
    """A `nano` tinyseek checkpoint (with tokenizer.json) overfit on R1_CHATS: greedy decoding of one of
    those prompts reproduces its `<think>...</think><answer>...</answer>` completion. ~10 s on 2 cores."""
    import torch

    from tinyseek.checkpoint import save_checkpoint
    from tinyseek.config import ModelConfig
    from tinyseek.model import Transformer
    from tinyseek.tokenizer import Tokenizer

    out = tmp_path_factory.mktemp("r1ckpt")
    tok = Tokenizer.train([u + " " + c for u, c in R1_CHATS] * 5, 300)
    tok_file = tok.save(out / "tok")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: threads only add overhead on a shared machine
    try:
        torch.manual_seed(0)
        model = Transformer(ModelConfig.preset("nano", vocab_size=tok.vocab_size))
        seqs = []
        for user, completion in R1_CHATS:
            prompt = tok.encode(tok.chat([{"role": "user", "content": user}]))
            seqs.append((prompt, tok.encode(completion) + [tok.eos_id]))
        L = max(len(p) + len(c) for p, c in seqs)
        x = torch.full((len(seqs), L), tok.pad_id)
        y = torch.full((len(seqs), L), -100)
        for i, (p, c) in enumerate(seqs):
            x[i, : len(p) + len(c)] = torch.tensor(p + c)
            y[i, len(p) - 1 : len(p) + len(c) - 1] = torch.tensor(c)  # next-token targets, completion only
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        for _ in range(100):
            loss = model(x, targets=y).ce_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return save_checkpoint(model.eval(), out / "ckpt", tokenizer_file=tok_file)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a test module of tiny ops: a second OpenMP thread gains nothing there, and on a
    2-core machine busy with other jobs the two spin against each other (10-50x slower); restored after."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
