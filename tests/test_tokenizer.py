"""Tokenizer: exact round trips (English, Chinese, emoji, arbitrary text), special tokens as single tokens,
digits split one by one, the R1 chat template (Python == jinja through transformers), one-line errors."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyseek.errors import TinyseekError
from tinyseek.r1 import ANSWER, ASSISTANT, BOS, CHAT_TEMPLATE, EOS, SPECIAL_TOKENS, THINK, THINK_END, USER, render_chat
from tinyseek.tokenizer import MIN_VOCAB, Tokenizer, cli_tokenizer, hf_tokenizer_files

CORPUS = [
    "The quick brown fox jumps over the lazy dog. 12345 + 678 = 13023",
    "小明有三个苹果，又买了五个。他现在有几个苹果？答案是八个。",
    "Emoji time 😀🎉👍🏽 and symbols ∑∫√ ok",
    "<think>\n3+4=7\n</think>\n<answer>7</answer>",
] * 50


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(CORPUS, 400)


@pytest.mark.parametrize(
    "text",
    [
        "Hello, world!  Two  spaces\tand a tab\n",
        "你好，世界！数学题：三加四等于七。",
        "mixed 中文 and emoji 👩‍👩‍👧‍👦 🇫🇷 \u200b zero-width",
        "",
        "\x00\x01 control bytes \x7f",
    ],
)
def test_round_trip(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert all(0 <= i < tok.vocab_size for i in ids)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=80))
def test_round_trip_any_text(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_special_tokens_are_single_tokens(tok):
    assert len(set(tok.special_ids.values())) == len(SPECIAL_TOKENS)
    for t in SPECIAL_TOKENS:
        ids = tok.encode(f"abc{t}def")
        assert ids.count(tok.token_id(t)) == 1, t
        assert tok.decode(ids) == f"abc{t}def"
    # skip_special drops exactly them
    assert tok.decode(tok.encode(f"{THINK}x{THINK_END}"), skip_special=True) == "x"
    assert tok.encode("hi", add_special=True)[0] == tok.bos_id


def test_digits_split_individually():
    # even when the corpus repeats the same numbers (which BPE would otherwise merge)
    t = Tokenizer.train(["12345 12345 999 2024 2024"] * 200, MIN_VOCAB + 40)
    ids = t.encode("12345")
    assert len(ids) == 5
    assert [t.decode([i]) for i in ids] == list("12345")


def test_small_vocab_limits():
    t = Tokenizer.train(CORPUS, MIN_VOCAB)
    assert t.vocab_size == MIN_VOCAB
    assert t.decode(t.encode("新的 text 😀")) == "新的 text 😀"
    with pytest.raises(TinyseekError, match="vocab_size"):
        Tokenizer.train(CORPUS, 256)


def test_chat_template_strips_prior_reasoning():
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "1+1?"},
        {"role": "assistant", "content": f"{THINK}\n1+1=2\n{THINK_END}\n{ANSWER}2</answer>"},
        {"role": "user", "content": "2+2?"},
    ]
    text = render_chat(msgs)
    assert text == f"{BOS}Be brief.{USER}1+1?{ASSISTANT}\n{ANSWER}2</answer>{EOS}{USER}2+2?{ASSISTANT}"
    assert render_chat(msgs[:2], add_generation_prompt=False) == f"{BOS}Be brief.{USER}1+1?"


def test_jinja_template_matches_python(tok, tmp_path):
    from transformers import AutoTokenizer

    f = tok.save(tmp_path)
    for name, text in hf_tokenizer_files(f).items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    convs = [
        [{"role": "user", "content": "你好"}],
        [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "<think>r</think><answer>x</answer>"},
            {"role": "user", "content": "b"},
        ],
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "no think tags"}],
    ]
    for msgs in convs:
        for gen in (True, False):
            assert hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen) == render_chat(msgs, gen)
        text = render_chat(msgs)
        assert hf.encode(text, add_special_tokens=False) == tok.encode(text)
    assert hf.eos_token == EOS and hf.bos_token == BOS and hf.pad_token == "<｜pad｜>"
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["chat_template"] == CHAT_TEMPLATE


def test_load_errors(tmp_path):
    with pytest.raises(TinyseekError, match="no such tokenizer"):
        Tokenizer.load(tmp_path / "nope.json")
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(TinyseekError, match="tokenizer.json: unreadable"):
        Tokenizer.load(tmp_path)


def test_cli(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(CORPUS[:8]), encoding="utf-8")
    out = tmp_path / "tok"
    assert (
        cli_tokenizer(
            [
                "--corpus",
                str(corpus),
                "--tasks",
                "arithmetic",
                "--n-per-task",
                "50",
                "--vocab-size",
                "300",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    t = Tokenizer.load(out)
    assert t.vocab_size <= 300
    assert (out / "tokenizer_config.json").is_file() and (out / "special_tokens_map.json").is_file()
    with pytest.raises(TinyseekError, match="missing.txt: no such text file"):
        cli_tokenizer(["--corpus", str(tmp_path / "missing.txt"), "--vocab-size", "300", "--out", str(tmp_path / "t2")])
    assert not (tmp_path / "t2").exists()
    with pytest.raises(TinyseekError, match="unknown task"):
        cli_tokenizer(["--tasks", "nope", "--out", str(tmp_path / "t3")])
