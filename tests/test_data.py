"""Data: packing respects document boundaries in the loss and resumes exactly; SFT targets cover exactly the
assistant's tokens; every accepted row format gives the same example; malformed rows name file and line."""

import json

import pytest
import torch

from tinyseek.data import (
    IGNORE,
    ExampleStream,
    PackedStream,
    collate,
    row_to_messages,
    sft_example,
    sft_examples_from_rows,
    task_documents,
    tokenize_documents,
)
from tinyseek.errors import TinyseekError
from tinyseek.io import read_rows, text_documents
from tinyseek.r1 import ASSISTANT, EOS
from tinyseek.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(["What is 2+3? <think>2+3=5</think><answer>5</answer> 你好"] * 50, 300)


EOS_ID = 0


def _docs():
    # document d: [100+d] * (d % 5 + 2) then EOS (ids only; no tokenizer needed)
    return [[100 + d] * (d % 5 + 2) + [EOS_ID] for d in range(23)]


def test_packing_masks_document_boundaries():
    s = PackedStream(_docs(), seq_len=7, eos_id=EOS_ID, seed=3)
    xs, ys = [], []
    for _ in range(6):
        x, y = s.next_rows(3)
        assert x.shape == y.shape == (3, 7)
        xs.append(x)
        ys.append(y)
    x, y = torch.cat(xs), torch.cat(ys)
    boundary = x == EOS_ID
    assert boundary.any()
    assert (y[boundary] == IGNORE).all()  # no loss on predicting the next document's first token
    # everywhere else the target is the next token of the same row, inside one document
    full = torch.cat([x, y[:, -1:].clone()], 1)
    assert (y[~boundary] == full[:, 1:][~boundary]).all()
    assert ((y[~boundary] == EOS_ID) | (y[~boundary] == x[~boundary])).all()  # docs repeat one id, then EOS
    # row k is tokens [k*(T+1), (k+1)*(T+1)) of the documents concatenated in the epoch's permuted order
    flat = [t for d in s._perm(0) for t in _docs()[d]]
    for k in range(8):
        assert x[k].tolist() == flat[k * 8 : k * 8 + 7]
        if x[k, -1] != EOS_ID:
            assert y[k, -1].item() == flat[k * 8 + 7]


def test_packing_deterministic_and_resumable():
    a = PackedStream(_docs(), seq_len=5, eos_id=EOS_ID, seed=1)
    a.next_rows(4)
    state = json.loads(json.dumps(a.state_dict()))  # plain data
    rest_a = [a.next_rows(4) for _ in range(12)]  # crosses epochs
    b = PackedStream(_docs(), seq_len=5, eos_id=EOS_ID, seed=1)
    b.load_state_dict(state)
    rest_b = [b.next_rows(4) for _ in range(12)]
    for (xa, ya), (xb, yb) in zip(rest_a, rest_b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    c = PackedStream(_docs(), seq_len=5, eos_id=EOS_ID, seed=2)
    assert not torch.equal(c.next_rows(4)[0], PackedStream(_docs(), seq_len=5, eos_id=EOS_ID, seed=1).next_rows(4)[0])
    with pytest.raises(TinyseekError, match="corpus changed"):
        PackedStream(_docs()[:5], seq_len=5, eos_id=EOS_ID, seed=1).load_state_dict(state)


def test_real_documents_have_bos_and_eos(tok):
    docs = task_documents({"addition": 5}, seed=0, split="train")
    assert len(docs) == 5 and all("<answer>" in d for d in docs)
    ids = tokenize_documents(tok, docs)
    assert all(d[0] == tok.bos_id and d[-1] == tok.eos_id for d in ids)
    assert tok.decode(ids[0][1:-1]) == docs[0]


def test_sft_mask_covers_exactly_the_assistant_tokens(tok):
    completion = "<think>2+3=5</think><answer>5</answer>"
    msgs = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "What is 2+3?"},
        {"role": "assistant", "content": "<think>old</think><answer>1</answer>"},
        {"role": "user", "content": "And 2+3?"},
        {"role": "assistant", "content": completion},
    ]
    ids, labels = sft_example(tok, msgs)
    assert tok.decode(ids) == tok.chat(msgs[:-1]) + completion + EOS
    assert tok.encode(tok.decode(ids)) == ids  # encoding in two parts == encoding the whole text
    trained = [i for i, lab in zip(ids, labels) if lab != IGNORE]
    assert tok.decode(trained) == completion + EOS
    first = next(i for i, lab in enumerate(labels) if lab != IGNORE)
    assert ids[first - 1] == tok.token_id(ASSISTANT) and all(lab == IGNORE for lab in labels[:first])
    assert labels[first:] == ids[first:]
    # after the shift and padding: targets are -100 exactly on prompt + padding
    short = sft_example(
        tok, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<answer>x</answer>"}]
    )
    b = collate([(ids, labels), short], tok.pad_id)
    assert b["tokens"].shape == b["targets"].shape == (2, len(ids) - 1)
    assert b["targets"][0].tolist() == labels[1:]
    n = len(short[0]) - 1
    assert (b["targets"][1, n:] == IGNORE).all() and (b["tokens"][1, n:] == tok.pad_id).all()
    # real_mask marks the unpadded positions (the MoE routing statistics count only those)
    assert b["real_mask"][0].all() and b["real_mask"][1].tolist() == [True] * n + [False] * (len(ids) - 1 - n)
    assert tok.decode([t for t in b["targets"][1].tolist() if t != IGNORE]) == "<answer>x</answer>" + EOS


def test_row_formats_agree(tok):
    rec = {"prompt": "1+2=", "solution": "1+2=3", "answer": "3"}
    comp = "<think>\n1+2=3\n</think>\n<answer>3</answer>"
    forms = [
        rec,
        {"prompt": "1+2=", "completion": comp},
        {"prompt": [{"role": "user", "content": "1+2="}], "completion": [{"role": "assistant", "content": comp}]},
        {"messages": [{"role": "user", "content": "1+2="}, {"role": "assistant", "content": comp}]},
    ]
    examples = [sft_example(tok, row_to_messages(r, "x")) for r in forms]
    assert all(e == examples[0] for e in examples)


def test_truncation_drops_examples_without_assistant_tokens(tok):
    rows = [("a:1", {"prompt": "x" * 200, "completion": "y"}), ("a:2", {"prompt": "q", "completion": "yy"})]
    ex, dropped = sft_examples_from_rows(tok, rows, max_len=30)
    assert dropped == 1 and len(ex) == 1 and len(ex[0][0]) <= 31


@pytest.mark.parametrize(
    "lines,match",
    [
        (['{"prompt": "a", "completion": "b"}', "", "{oops"], r"bad\.jsonl:3: invalid JSON"),
        (['{"prompt": "a", "completion": "b"}', '{"prompt": "a"}'], r"bad\.jsonl:2: a row needs"),
        (['{"messages": [{"role": "user", "content": "a"}]}'], r"bad\.jsonl:1: the last message must be the assistant"),
        (
            ['{"messages": [{"role": "robot", "content": "a"}, {"role": "assistant", "content": "b"}]}'],
            r"bad\.jsonl:1: message 0",
        ),
        (["[1, 2]"], r"bad\.jsonl:1: expected an object"),
    ],
)
def test_malformed_rows_name_file_and_line(tok, tmp_path, lines, match):
    f = tmp_path / "bad.jsonl"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(TinyseekError, match=match) as e:
        sft_examples_from_rows(tok, read_rows(f), 64)
    assert "\n" not in str(e.value)


def test_parquet_and_text_files(tok, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": ["a", "b"], "completion": ["c", "d"]}), tmp_path / "d.parquet")
    ex, _ = sft_examples_from_rows(tok, read_rows(tmp_path / "d.parquet"), 64)
    assert len(ex) == 2
    (tmp_path / "t.txt").write_text("para one\nline two\n\n\npara two\n", encoding="utf-8")
    assert text_documents(tmp_path / "t.txt") == ["para one\nline two", "para two"]
    (tmp_path / "t.jsonl").write_text('{"text": "x"}\n{"txt": "y"}\n', encoding="utf-8")
    with pytest.raises(TinyseekError, match=r"t\.jsonl:2: expected an object with a string field 'text'"):
        text_documents(tmp_path / "t.jsonl")
    with pytest.raises(TinyseekError, match="no such data file"):
        list(read_rows(tmp_path / "missing.jsonl"))


def test_example_stream_resumes():
    a = ExampleStream(list(range(7)), seed=5)
    a.next(3)
    st = a.state_dict()
    tail = a.next(20)
    b = ExampleStream(list(range(7)), seed=5)
    b.load_state_dict(st)
    assert b.next(20) == tail
    assert sorted(ExampleStream(list(range(7)), seed=5).next(7)) == list(range(7))  # an epoch is a permutation
