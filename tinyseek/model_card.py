"""The files an export carries so that it can be shared: a model card (README.md) and generation_config.json.

A transformers directory leaves its run behind, so it says itself what it is: the model card names the
architecture and size, what the model was trained on (`provenance.trained_on`: task, difficulty, prompt template),
the prompt format to use (a model trained on `12+34=` in the R1 chat template answers that, and gives noise to
anything else), its held-out scores when the run evaluated this very checkpoint (the recipe's eval stages), and how
to load and sample it with transformers. `generation_config.json` holds R1's recommended sampling (temperature 0.6,
top-p 0.95: `r1.TEMPERATURE`, `r1.TOP_P`), which `model.generate` picks up; `trained_on.json` keeps what
`trained_on` found, for `tinyseek eval` / `chat` / `serve` on the exported directory.
"""

from __future__ import annotations

import json
from pathlib import Path

from tinyseek.config import ModelConfig
from tinyseek.cost import active_params, total_params
from tinyseek.provenance import FILE as TRAINED_ON_FILE
from tinyseek.provenance import TrainedOn, levels_text, trained_on
from tinyseek.r1 import R1_ZERO_TEMPLATE, TEMPERATURE, TOP_P, render_chat


def generation_config(token_ids: dict) -> dict:
    """transformers' GenerationConfig fields: sampling at R1's recommended temperature and top-p, with the
    tokenizer's special ids (generation stops at the end-of-sentence token)."""
    return {**token_ids, "do_sample": True, "temperature": TEMPERATURE, "top_p": TOP_P}


def scores(ckpt: Path) -> list[dict]:
    """The run's evaluations of this very checkpoint: one row per eval stage of its recipe whose model it is."""
    stage = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    run = stage.parent
    try:
        recipe = json.loads((run / "recipe.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return []
    rows = []
    for s in recipe.get("stages") or []:
        model = (s.get("fields") or {}).get("model")
        if s.get("kind") != "eval" or not isinstance(model, str) or Path(model).resolve() != ckpt.resolve():
            continue
        try:
            ev = json.loads((run / s["name"] / "eval.json").read_text(encoding="utf-8"))
        except (OSError, KeyError, json.JSONDecodeError):
            continue
        if isinstance(ev.get("pass@1"), dict):
            rows.append({"stage": s["name"], **ev})
    return rows


def _prompt_lines(info: TrainedOn) -> tuple[str, list[str]]:
    """(a prompt the model answers, as text; the Python lines that build its ids with the exported tokenizer)."""
    question = "12+34=" if info.task in ("addition", "arithmetic") else "..."
    if info.template == "r1-zero":
        return R1_ZERO_TEMPLATE.format(prompt=question), [
            f"TEMPLATE = {R1_ZERO_TEMPLATE!r}",
            f"prompt = tok.bos_token + TEMPLATE.format(prompt={question!r})",
        ]
    return render_chat([{"role": "user", "content": question}]), [
        f'messages = [{{"role": "user", "content": {json.dumps(question)}}}]',
        "prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)",
    ]


def _score_lines(rows: list[dict]) -> list[str]:
    if not rows:
        return ["No evaluation of this checkpoint was found in its run (`tinyseek eval` measures one)."]
    lines = [
        "Held-out problems (none seen in training), pass@1 as the mean over k samples at temperature 0.6, top-p "
        "0.95 (R1's protocol), with 95% intervals over problems:",
        "",
        "| evaluation | problems | samples | pass@1 | 95% interval | greedy |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        p, greedy = r["pass@1"], (r.get("greedy") or {}).get("pass@1", {}).get("value")
        g = f"{100 * greedy:.1f}%" if isinstance(greedy, (int, float)) else "-"
        lo, hi = p["ci95"]
        lines.append(
            f"| {r['stage']} | {r.get('n_problems')} | {r.get('samples')} | {100 * p['value']:.1f}% | "
            f"[{100 * lo:.1f}, {100 * hi:.1f}] | {g} |"
        )
    return lines


def model_card(cfg: ModelConfig, ckpt: Path, info: TrainedOn) -> str:
    """README.md of an exported directory (Hugging Face's model card layout: YAML front matter, then Markdown)."""
    kind = f"MoE, {cfg.n_routed_experts} routed experts (top-{cfg.n_activated_experts})" if cfg.is_moe else "dense"
    trained = (
        f"{info.task} problems at difficulty {levels_text(info.levels)}"
        if info.task and info.levels
        else (info.task or "unknown (its run did not say)")
    )
    text, build = _prompt_lines(info)
    template = "R1-Zero's template" if info.template == "r1-zero" else "the DeepSeek-R1 chat template"
    lines = [
        "---",
        "library_name: transformers",
        "license: mit",
        "pipeline_tag: text-generation",
        "tags: [tinyseek, deepseek_v3, reasoning]",
        "---",
        "",
        f"# {ckpt.parent.name if ckpt.name == 'final' else ckpt.name}",
        "",
        f"A small DeepSeek-V3-architecture model ({total_params(cfg) / 1e6:.2f}M parameters, "
        f"{active_params(cfg) / 1e6:.2f}M active a token; {cfg.n_layers} layers, {kind}, Multi-head Latent "
        f"Attention), trained with tinyseek and exported from `{ckpt}`. It loads as transformers' own "
        "`DeepseekV3ForCausalLM` (no remote code).",
        "",
        "## What it was trained on",
        "",
        f"- **task**: {trained}; it answers such problems and gives noise to anything else.",
        f"- **prompt format**: {template}. The model continues it with `<think>` reasoning `</think>` and "
        "`<answer>` the answer `</answer>`. A prompt it answers, as text:",
        "",
        "  ```",
        f"  {text}",
        "  ```",
        "",
        "## Scores",
        "",
        *_score_lines(scores(ckpt)),
        "",
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        'tok = AutoTokenizer.from_pretrained("THIS_DIR")',
        'model = AutoModelForCausalLM.from_pretrained("THIS_DIR")',
        *build,
        'ids = tok(prompt, return_tensors="pt").input_ids',
        "out = model.generate(ids, max_new_tokens=64)  # samples at T 0.6, top-p 0.95: generation_config.json",
        "print(tok.decode(out[0, ids.shape[1] :]))",
        "```",
        "",
        f"Sampling defaults (`generation_config.json`): temperature {TEMPERATURE}, top-p {TOP_P}, DeepSeek-R1's "
        "recommendation. With tinyseek: `tinyseek chat THIS_DIR`, `tinyseek eval THIS_DIR`.",
        "",
    ]
    return "\n".join(lines)


def write_shared_files(tmp: Path, cfg: ModelConfig, ckpt: Path, token_ids: dict) -> None:
    """README.md, generation_config.json and trained_on.json into the export being written (`tmp`)."""
    info = trained_on(ckpt)
    (tmp / "README.md").write_text(model_card(cfg, ckpt, info), encoding="utf-8")
    (tmp / "generation_config.json").write_text(
        json.dumps(generation_config(token_ids), indent=2) + "\n", encoding="utf-8"
    )
    (tmp / TRAINED_ON_FILE).write_text(json.dumps(info.to_dict(), indent=2) + "\n", encoding="utf-8")
