"""R1-Zero's parts: the behaviour markers, right/wrong lengths, reward-hack flags, the corpus styles, checked traces,
and pretraining on whole documents."""

from __future__ import annotations

import random

import pytest

from tinyseek import rewards, tasks
from tinyseek.config import ConfigError
from tinyseek.data import collate, document_examples
from tinyseek.evaluate import reasoning_stats
from tinyseek.r1 import R1_ZERO_TEMPLATE, completion_text, training_text
from tinyseek.tasks.arithmetic import add_trace, add_trace_checked
from tinyseek.tasks.base import behaviours, think_block

BARE = " <think>\n</think>\n<answer>132</answer>"
WORKED = " <think>\n7+5+0=12 4+8+1=13 so 132\n</think>\n<answer>132</answer>"
CHECKED = " <think>\n7+5+0=12 yes 4+8+1=13 yes so 132\n</think>\n<answer>132</answer>"
BACKTRACK = " <think>\n7+5+0=11 no 7+5+0=12 yes 4+8+1=13 yes so 132\n</think>\n<answer>132</answer>"
SEARCH = " <think>\n9-7=2 2*3=6 no\n3*7=21 21+9=30 yes\n3*7+9\n</think>\n<answer>3*7+9</answer>"


@pytest.mark.parametrize(
    "text, reasons, verifies, backtracks",
    [
        (BARE, False, False, False),
        (WORKED, True, False, False),
        (CHECKED, True, True, False),
        (BACKTRACK, True, True, True),
        (SEARCH, True, True, True),  # Countdown's search judges its tries with the same words
        (" <think>\nI think the answer is yes, no doubt\n</think>\n<answer>1</answer>", False, False, False),
        (" <think>\n7+5+0=12 4+8+1=13 so 132", True, False, False),  # cut at the limit: no closing tag
        (" <think>\n</think>\n<answer>7+5=12 no</answer>", False, False, False),  # the answer is not reasoning
        ("7+5=12 yes", True, True, False),  # no tags at all: the whole text is read
    ],
)
def test_behaviour_markers_on_hand_written_completions(text, reasons, verifies, backtracks):
    assert behaviours(text) == {"reasons": reasons, "verifies": verifies, "backtracks": backtracks}


def test_think_block_stops_at_the_answer_when_the_closing_tag_is_missing():
    assert think_block(" <think>\n1+2=3\n<answer>3</answer>") == "\n1+2=3\n"
    assert think_block("plain text") == "plain text"


def test_reasoning_stats_split_lengths_of_right_and_wrong():
    texts = [BARE, WORKED, CHECKED, BACKTRACK, WORKED, BARE]
    lengths = [10, 30, 40, 50, 64, 8]
    truncated = [False, False, False, False, True, False]
    correct = [1.0, 1.0, 0.0, 1.0, 1.0, None]
    s = reasoning_stats(texts, lengths, truncated, correct)
    assert s["len_right"] == pytest.approx((10 + 30 + 50) / 3)  # the truncated right one is left out
    assert s["len_wrong"] == 40
    assert s["truncated"] == pytest.approx(1 / 6)
    assert s["share_reasons"] == pytest.approx(4 / 6)
    assert s["share_verifies"] == pytest.approx(2 / 6)
    assert s["share_backtracks"] == pytest.approx(1 / 6)
    none = reasoning_stats([BARE], [5], [False], [0.0])
    assert none["len_right"] is None and none["len_wrong"] == 5


def test_reward_hacks_flag_rewarded_completions_without_reasoning_or_tags():
    assert rewards.reward_hacks(WORKED) == []
    assert rewards.reward_hacks(BACKTRACK) == []
    assert rewards.reward_hacks(BARE) == ["no_reasoning"]
    assert rewards.reward_hacks(" <think>\n7+5+0=12 so 132\n</think> 132") == ["no_answer_tags"]
    assert rewards.reward_hacks(" <think>\n</think>\n<answer>7+5+0=12 4+8+1=13 so 132</answer>") == [
        "no_reasoning",
        "work_in_answer",
    ]


def _unchecked(trace: str) -> str:
    """A checked trace with its verdicts and its retracted columns taken out."""
    words = trace.split(" ")
    return " ".join(w for w, nxt in zip(words, words[1:] + [""]) if w not in ("yes", "no") and nxt != "no")


def test_checked_addition_traces_judge_every_column_and_redo_a_slip():
    rng = random.Random(0)
    slips = 0
    for _ in range(300):
        a, b = rng.randrange(10, 10_000), rng.randrange(10, 10_000)
        t = add_trace_checked(a, b, rng)
        assert _unchecked(t) == add_trace(a, b), t  # the same columns, the same answer
        assert t.count(" yes") == len(add_trace(a, b).split(" ")) - 2  # one `yes` per column
        assert t.count(" no") <= 1
        slips += " no " in t
    assert 100 < slips < 200  # about half the traces hold a slip


def test_checked_solution_is_for_additions_only():
    rec = tasks.get("arithmetic").generate(50, seed=0, difficulty=2)
    sub = next(r for r in rec if "-" in r["prompt"])
    with pytest.raises(Exception, match="additions only"):
        tasks.get("arithmetic").checked_solution(sub, random.Random(0))
    with pytest.raises(Exception, match="no checked traces"):
        tasks.get("equations").checked_solution(tasks.get("equations").generate(1)[0], random.Random(0))


def test_layouts_and_the_bare_completion():
    rec = {"prompt": "47+85=", "solution": "", "answer": "132"}
    assert completion_text(rec) == "<think>\n</think>\n<answer>132</answer>"  # no blank line: one corpus document
    assert training_text(rec, "r1-zero") == R1_ZERO_TEMPLATE.format(prompt="47+85=") + " " + completion_text(rec)
    assert training_text(rec, "dialogue") == "User: 47+85=. Assistant: " + completion_text(rec)
    with pytest.raises(Exception, match="unknown document layout 'html'"):
        training_text(rec, "html")


def test_a_corpus_mix_draws_each_style_in_its_share():
    mix = {"dialogue": 0.5, "r1-zero:bare": 0.3, "r1-zero:checked": 0.2}
    docs = tasks.documents({"addition": 2000}, seed=0, difficulty=2, mix=mix)
    assert docs == tasks.documents({"addition": 2000}, seed=0, difficulty=2, mix=mix)  # seeded
    head = R1_ZERO_TEMPLATE.split("{prompt}")[0]
    dialogue = sum(d.startswith("User: ") for d in docs) / len(docs)
    bare = sum(d.startswith(head) and "<think>\n</think>" in d for d in docs) / len(docs)
    checked = sum(d.startswith(head) and " yes" in d for d in docs) / len(docs)
    assert abs(dialogue - 0.5) < 0.04 and abs(bare - 0.3) < 0.04 and abs(checked - 0.2) < 0.04
    assert not any("\n\n" in d for d in docs)
    for bad, msg in [
        ({"html": 1.0}, "expected LAYOUT"),
        ({"dialogue:long": 1.0}, "expected LAYOUT"),
        ({"dialogue": 0.5}, "sum to 1"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            tasks.documents({"addition": 10}, mix=bad)


def test_document_rows_hold_one_document_and_train_on_all_of_it():
    docs = [[1, 5, 6, 2], [1, 7, 7, 7, 7, 7, 2], [1, 9, 2]]
    ex = document_examples(docs, seq_len=5)
    assert ex[1] == ([1, 7, 7, 7, 7, 7], [1, 7, 7, 7, 7, 7])  # cut to seq_len + 1
    b = collate(ex, pad_id=0)
    assert b["tokens"].tolist() == [[1, 5, 6, 0, 0], [1, 7, 7, 7, 7], [1, 9, 0, 0, 0]]
    assert b["targets"].tolist() == [[5, 6, 2, -100, -100], [7, 7, 7, 7, 7], [9, 2, -100, -100, -100]]


def test_sft_in_r1_zero_template_trains_on_the_answer_only_or_the_trace(tmp_path):
    from tinyseek.data import IGNORE, sft_examples_from_rows
    from tinyseek.tokenizer import Tokenizer

    rec = {"prompt": "47+85=", "solution": "7+5+0=12 4+8+1=13 so 132", "answer": "132"}
    text = training_text(rec, "r1-zero")
    tok = Tokenizer.train([text, training_text({**rec, "solution": ""}, "r1-zero")] * 20, 300)
    ((ids, labels),) = sft_examples_from_rows(tok, [("row 1", rec)], max_len=400, template="r1-zero")[0]
    assert ids == tok.encode(text, add_special=True) + [tok.eos_id]  # the whole document, as pretraining saw it
    n_prompt = len(tok.encode(R1_ZERO_TEMPLATE.format(prompt="47+85="), add_special=True))
    assert labels[:n_prompt] == [IGNORE] * n_prompt and IGNORE not in labels[n_prompt:]
    assert tok.decode(labels[n_prompt:]).startswith(" <think>\n7+5+0=12")
    ((ids, labels),) = sft_examples_from_rows(tok, [("row 1", rec)], 400, template="r1-zero", answers_only=True)[0]
    assert tok.decode([t for t in labels if t != IGNORE]).startswith(" <think>\n</think>\n<answer>132</answer>")
    with pytest.raises(Exception, match="needs task records"):
        sft_examples_from_rows(tok, [("row 2", {"messages": []})], 400, answers_only=True)
    # evaluation (and SFT's stopping check) prompt a record as the SFT example's prompt part and GRPO's policy do
    from tinyseek.evaluate import prompt_renderer

    assert prompt_renderer(tok, "chat") is None  # the engine's own chat template
    assert prompt_renderer(tok, "r1-zero")(rec) == tok.encode(R1_ZERO_TEMPLATE.format(prompt="47+85="), True)
    assert ids[:n_prompt] == prompt_renderer(tok, "r1-zero")(rec)


def test_run_set_changes_one_stage_and_names_bad_flags(tmp_path):
    from tinyseek.recipe import load_recipe, parse_sets, recipes_dir

    sets = parse_sets(["grpo.loss_type=dr_grpo", "grpo.lr=1e-5", "pretrain.model.dim=64"])
    r = load_recipe(recipes_dir() / "r1-zero.toml", tmp_path, sets=sets)
    by = {s.name: s.fields for s in r.stages}
    assert by["grpo"]["loss_type"] == "dr_grpo" and by["grpo"]["lr"] == 1e-5
    assert by["pretrain"]["model"]["dim"] == 64 and by["pretrain"]["model"]["n_routed_experts"] == 8  # merged
    plain = {s.name: s.fields for s in load_recipe(recipes_dir() / "r1-zero.toml", tmp_path).stages}
    assert {k: v for k, v in by.items() if k not in ("grpo", "pretrain")} == {
        k: v for k, v in plain.items() if k not in ("grpo", "pretrain")
    }
    with pytest.raises(ConfigError, match="expected STAGE.FIELD=VALUE"):
        parse_sets(["loss_type=dr_grpo"])
    with pytest.raises(ConfigError, match="unknown stage 'gpro'.*did you mean 'grpo'"):
        load_recipe(recipes_dir() / "r1-zero.toml", tmp_path, sets=parse_sets(["gpro.lr=1"]))


def test_a_recipe_includes_another_and_its_stages_come_first(tmp_path):
    from tinyseek.recipe import load_recipe, recipes_dir

    zero = load_recipe(recipes_dir() / "r1-zero.toml", tmp_path)
    both = load_recipe(recipes_dir() / "r1-zero-vs-sft.toml", tmp_path)
    n = len(zero.stages)
    assert [(s.name, s.config_hash) for s in both.stages[:n]] == [(s.name, s.config_hash) for s in zero.stages]
    assert {s.name for s in both.stages[n:]} >= {"sft-answers", "sft-traces"}
    grpo = next(s for s in zero.stages if s.kind == "grpo")
    for s in both.stages[n:]:
        if s.kind == "sft":  # the controls get the RL stage's compute, from its start, on its problems
            assert s.fields["max_flops"] == grpo.fields["max_flops"] and s.fields["init"] == grpo.fields["model"]
            assert s.fields["data"] == [grpo.fields["data"]] and s.fields["prompt_template"] == "r1-zero"
    loop = tmp_path / "a.toml"
    loop.write_text('include = "a.toml"\n[[stage]]\nkind = "tasks"\n')
    with pytest.raises(ConfigError, match="includes itself"):
        load_recipe(loop, tmp_path)
