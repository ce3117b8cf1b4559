"""A checkpoint remembers what it was trained on, and the commands a person runs next use it.

The run is built by hand (a task file, a stage's config.toml, recipe.json, an eval.json) around the session's
overfit `r1_checkpoint`, as a recipe run lays it out: `provenance.trained_on` reads it; `tinyseek eval` defaults
to its task, difficulty and template and warns on a mismatch, and names its output after the run and stage without
ever overwriting one; `chat`, `generate` and `serve` prompt in the checkpoint's template; an export carries a model
card and generation_config.json that transformers picks up.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tinyseek import tasks
from tinyseek.config import write_toml
from tinyseek.io import write_json, write_jsonl
from tinyseek.provenance import trained_on
from tinyseek.r1 import R1_ZERO_TEMPLATE


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def make_run(tmp_path: Path, ckpt: Path, template: str = "chat", level: int = 2) -> Path:
    """RUN/{tasks/rl.jsonl, grpo/config.toml, grpo/final, grpo/checkpoints/step-2, eval-grpo/eval.json, recipe.json}
    as `tinyseek run` leaves them: a GRPO stage on addition problems of one level, evaluated once."""
    run = tmp_path / "demo"
    recs = tasks.get("addition").generate(20, seed=0, split="train", difficulty=level)
    write_jsonl(run / "tasks" / "rl.jsonl", recs)
    shutil.copytree(ckpt, run / "grpo" / "final")
    shutil.copytree(ckpt, run / "grpo" / "checkpoints" / "step-2")
    grpo = {"model": str(run / "sft" / "final"), "task": "arithmetic", "data": str(run / "tasks" / "rl.jsonl")}
    grpo["prompt_template"] = template
    write_toml(grpo, run / "grpo" / "config.toml")
    ev = {"pass@1": {"value": 0.725, "ci95": [0.68, 0.77]}, "n_problems": 400, "samples": 4}
    write_json(run / "eval-grpo" / "eval.json", {**ev, "greedy": {"pass@1": {"value": 0.75, "ci95": [0.7, 0.8]}}})
    stages = [
        {"kind": "tasks", "name": "tasks", "fields": {"tasks": ["addition"], "difficulty": level}},
        {"kind": "grpo", "name": "grpo", "fields": grpo},
        {"kind": "eval", "name": "eval-grpo", "fields": {"model": str(run / "grpo" / "final"), "data": "x"}},
    ]
    write_json(run / "recipe.json", {"name": "demo", "stages": stages})
    return run


def test_trained_on_reads_the_stage_its_data_and_the_run(tmp_path, r1_checkpoint):
    run = make_run(tmp_path, r1_checkpoint)
    for ckpt in (run / "grpo" / "final", run / "grpo" / "checkpoints" / "step-2"):
        info = trained_on(ckpt)
        assert (info.task, info.levels, info.template) == ("addition", [2], "chat")
        assert str(run / "tasks" / "rl.jsonl") in info.sources  # the records said so, not the `task` default
    # a student distilled from it on samples that name the task but not the level: the level from its teacher
    write_jsonl(run / "sample" / "sft.jsonl", [{"prompt": "1+2=", "completion": "3", "task": "addition"}])
    shutil.copytree(r1_checkpoint, run / "distill" / "final")
    write_toml({"data": [str(run / "sample" / "sft.jsonl")], "teacher": str(run / "grpo" / "final")},
               run / "distill" / "config.toml")  # fmt: skip
    info = trained_on(run / "distill" / "final")
    assert (info.task, info.levels) == ("addition", [2])
    # a base pretrained on text: the task from the run's tasks stage ([lo, hi] = the levels lo..hi), the template
    # from a stage of the recipe that prompts it
    shutil.copytree(r1_checkpoint, run / "pretrain" / "final")
    write_toml({"text_files": [str(run / "tasks" / "corpus.txt")]}, run / "pretrain" / "config.toml")
    recipe = json.loads((run / "recipe.json").read_text())
    recipe["stages"][0]["fields"]["difficulty"] = [2, 4]
    base = {"model": str(run / "pretrain" / "final"), "prompt_template": "r1-zero"}
    recipe["stages"].append({"kind": "eval", "name": "eval-base", "fields": base})
    write_json(run / "recipe.json", recipe)
    info = trained_on(run / "pretrain" / "final")
    assert (info.task, info.levels, info.template) == ("addition", [2, 3, 4], "r1-zero")
    assert trained_on(r1_checkpoint).task == ""  # outside any run: nothing known, nothing guessed


def _eval(capsys, *argv) -> tuple[dict | None, str]:
    from tinyseek.evaluate import cli_eval

    rc = cli_eval([*argv, "--n", "4", "--samples", "1", "--max-new-tokens", "4", "--threads", "1"])
    cap = capsys.readouterr()
    out = re.search(r"wrote (\S+eval.json)", cap.out)
    return (json.loads(Path(out.group(1)).read_text()) if rc == 0 and out else None), cap.err


def test_eval_defaults_to_what_the_checkpoint_was_trained_on(tmp_path, r1_checkpoint, capsys, monkeypatch):
    """`tinyseek eval runs/demo/grpo/final` with no --task: the demo's task at the demo's level (before: the
    README's command scored 0% at the task's default 4 digits, without a word)."""
    monkeypatch.chdir(tmp_path)
    run = make_run(tmp_path, r1_checkpoint)
    res, err = _eval(capsys, str(run / "grpo" / "final"))
    assert res is not None, err
    assert (res["task"], res["difficulty"], res["prompt_template"]) == ("addition", 2, "chat")
    assert all(re.fullmatch(r"\d{2}\+\d{2}=", p["prompt"]) for p in res["problems"])  # 2-digit + 2-digit
    assert "task addition, difficulty 2" in err and str(run / "grpo" / "config.toml") in err
    # asked for something else: done, with a one-line warning each
    res, err = _eval(capsys, str(run / "grpo" / "final"), "--difficulty", "4")
    assert res["difficulty"] == 4 and all(re.fullmatch(r"\d{4}\+\d{4}=", p["prompt"]) for p in res["problems"])
    assert re.search(r"warning: .*trained on difficulty 2, not 4", err)
    res, err = _eval(capsys, str(run / "grpo" / "final"), "--task", "countdown")
    assert res["task"] == "countdown" and "trained on addition, not countdown" in err


def test_eval_output_is_named_after_run_and_stage_and_never_overwritten(tmp_path, r1_checkpoint, capsys, monkeypatch):
    """Before: every `.../final` wrote runs/eval/final-<task>/, the next evaluation silently replacing it."""
    monkeypatch.chdir(tmp_path)
    run = make_run(tmp_path, r1_checkpoint)
    other = tmp_path / "elsewhere" / "sft"
    shutil.copytree(r1_checkpoint, other / "final")
    write_toml({"task": "addition", "difficulty": 2}, other / "config.toml")
    _eval(capsys, str(run / "grpo" / "final"))
    first = tmp_path / "runs" / "eval" / "demo-grpo-final-addition" / "eval.json"
    kept = first.read_text()
    _eval(capsys, str(run / "grpo" / "final"), "--seed", "1")
    _eval(capsys, str(other / "final"))
    written = sorted(p.parent.name for p in (tmp_path / "runs" / "eval").glob("*/eval.json"))
    assert written == ["demo-grpo-final-addition", "demo-grpo-final-addition-2", "sft-final-addition"]
    assert first.read_text() == kept
    # an explicit --out that holds an evaluation: refused (one line), unless --overwrite
    from tinyseek.errors import TinyseekError

    with pytest.raises(TinyseekError, match=r"holds an earlier evaluation \(--overwrite"):
        _eval(capsys, str(run / "grpo" / "final"), "--out", str(first.parent))
    assert first.read_text() == kept
    res, _ = _eval(capsys, str(run / "grpo" / "final"), "--out", str(first.parent), "--overwrite", "--seed", "2")
    assert res["problems"] != json.loads(kept)["problems"]


def test_a_checkpoint_trained_in_r1_zero_is_prompted_in_r1_zero(tmp_path, r1_checkpoint, capsys, monkeypatch):
    """eval, generate and chat render R1-Zero's template for it without being told (the flag still wins)."""
    import tinyseek.chat as chat
    import tinyseek.evaluate as evaluate
    from tinyseek.evaluate import cli_eval

    monkeypatch.chdir(tmp_path)
    run = make_run(tmp_path, r1_checkpoint, template="r1-zero")
    ckpt = str(run / "grpo" / "final")
    prompts = []

    def fake_stream(engine, ids, params, write):
        prompts.append(engine.tokenizer.decode(ids))
        write("<think>\n1+2\n</think>\n<answer>3</answer>")
        return ""

    monkeypatch.setattr(chat, "_stream", fake_stream)
    assert chat.cli_generate([ckpt, "--prompt", "12+34="]) == 0
    lines = iter(["12+34=", "exit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    assert chat.cli_chat([ckpt]) == 0
    assert chat.cli_generate([ckpt, "--prompt", "12+34=", "--prompt-template", "chat"]) == 0
    zero = "<｜begin▁of▁sentence｜>" + R1_ZERO_TEMPLATE.format(prompt="12+34=")
    assert prompts[:2] == [zero, zero] and prompts[2].endswith("<｜User｜>12+34=<｜Assistant｜>")
    assert "trained in the r1-zero template, not chat" in capsys.readouterr().err
    seen = []  # (R1-Zero's preamble alone is longer than this nano model's context: the config is what is checked)
    monkeypatch.setattr(evaluate, "run", lambda cfg, out: seen.append(cfg) or exit(0))
    with pytest.raises(SystemExit):
        cli_eval([ckpt])
    assert (seen[0].task, seen[0].difficulty, seen[0].prompt_template) == ("addition", 2, "r1-zero")


def test_export_carries_a_model_card_and_r1_sampling_that_transformers_picks_up(tmp_path, r1_checkpoint):
    import torch
    import transformers

    from tinyseek.checkpoint import cli_export

    run = make_run(tmp_path, r1_checkpoint)
    out = tmp_path / "hf"
    assert cli_export([str(run / "grpo" / "final"), "--out", str(out)]) == 0
    card = (out / "README.md").read_text()
    assert "addition problems at difficulty 2" in card and "chat template" in card
    assert "| eval-grpo | 400 | 4 | 72.5% | [68.0, 77.0] | 75.0% |" in card  # the run's score of this checkpoint
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    g = model.generation_config
    assert (g.do_sample, g.temperature, g.top_p, g.eos_token_id) == (True, 0.6, 0.95, tok.eos_token_id)
    # the card's recipe for a prompt, greedy: the completion the model was trained to give
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2 plus 3?"}], add_generation_prompt=True, tokenize=False
    )
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        greedy = model.generate(ids, max_new_tokens=40, do_sample=False)
    text = tok.decode(greedy[0, ids.shape[1] :], skip_special_tokens=False)
    assert text.startswith("<think>\nAdd 2 and 3 to get 5.\n</think>\n<answer>5</answer>"), text
    # and the export remembers what it was trained on, for tinyseek's own commands
    assert (trained_on(out).task, trained_on(out).levels) == ("addition", [2])


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_exports_and_checkpoints_get_the_umasks_modes(tmp_path, r1_checkpoint, umask, mode):
    """Files a user shares are readable as the umask allows (before: model.safetensors came out 0600, the mode of
    the private temporary file safetensors writes through)."""
    import os

    from tinyseek.checkpoint import cli_export, load_model, save_checkpoint

    old = os.umask(umask)
    try:
        cli_export([str(r1_checkpoint), "--out", str(tmp_path / "hf")])
        save_checkpoint(load_model(r1_checkpoint), tmp_path / "ck")
    finally:
        os.umask(old)
    for d in (tmp_path / "hf", tmp_path / "ck"):
        modes = {p.name: p.stat().st_mode & 0o777 for p in d.iterdir()}
        assert modes["model.safetensors"] == mode and set(modes.values()) == {mode}, modes
        assert d.stat().st_mode & 0o777 == mode | (0o111 & ~umask)  # the directory: rwx as the umask allows


def test_chat_asks_a_task_model_each_question_alone(tmp_path, r1_checkpoint, capsys, monkeypatch):
    """A model trained on single problems answers a second one in a two-turn prompt with noise: chat sends each
    message alone unless --history (a model of no known task keeps the conversation, tests/test_engine.py)."""
    import tinyseek.chat as chat

    ckpt = str(make_run(tmp_path, r1_checkpoint) / "grpo" / "final")
    prompts = []
    monkeypatch.setattr(chat, "_stream", lambda engine, ids, p, write: prompts.append(engine.decode(ids)) or "x")
    for flags in ([], ["--history"]):
        lines = iter(["12+34=", "58+67=", "exit"])
        monkeypatch.setattr("builtins.input", lambda prompt="", lines=lines: next(lines))
        assert chat.cli_chat([ckpt, *flags]) == 0
    alone, kept = prompts[1], prompts[3]
    assert alone.endswith("<｜User｜>58+67=<｜Assistant｜>") and "12+34=" not in alone
    assert "<｜User｜>12+34=<｜Assistant｜>x" in kept and kept.endswith("<｜User｜>58+67=<｜Assistant｜>")
    banner = capsys.readouterr().out
    assert "trained on addition problems at difficulty 2, in the chat template" in banner
    assert re.search(r"try: \d{2}\+\d{2}=", banner) and "each message is asked on its own" in banner
