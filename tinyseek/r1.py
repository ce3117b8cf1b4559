"""The R1 text format: special tokens, the chat template, and how a solved problem reads as a completion.

The chat template is DeepSeek-R1's:

    <｜begin▁of▁sentence｜>{system}<｜User｜>{user}<｜Assistant｜>{completion}<｜end▁of▁sentence｜>...

where a completion is `<think>...</think><answer>...</answer>`. As in R1's template, assistant turns
in the history are reduced to what follows their last `</think>` (the reasoning is dropped), and a
generation prompt is the bare `<｜Assistant｜>`. `CHAT_TEMPLATE` is the same thing in jinja, for
transformers' `apply_chat_template`.

Everything that writes or reads this format (the tokenizer, the datasets, the tasks' worked solutions,
GRPO's prompts, the server's reasoning split) takes it from here, so the format is defined once.
"""

from __future__ import annotations

from tinyseek.errors import TinyseekError

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK, THINK_END = "<think>", "</think>"
ANSWER, ANSWER_END = "<answer>", "</answer>"
PAD = "<｜pad｜>"
SPECIAL_TOKENS = [BOS, EOS, USER, ASSISTANT, THINK, THINK_END, ANSWER, ANSWER_END, PAD]

# DeepSeek-R1's recommended sampling (its model card: temperature 0.5-0.7, 0.6 recommended; top-p 0.95), the one
# default of everything that samples for a person: `chat`, `generate`, `eval`, the server's requests, its chat page,
# and an export's generation_config.json. (Training rollouts set their own: GRPO's `temperature`.)
TEMPERATURE, TOP_P = 0.6, 0.95


# The jinja twin of render_chat, written into exported model directories so transformers' apply_chat_template
# matches (checked against render_chat in tests/test_tokenizer.py).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}{% endif %}{% endfor %}"
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}{{ '<｜User｜>' + m['content'] }}"
    "{% elif m['role'] == 'assistant' %}"
    "{% set c = m['content'] %}{% if '</think>' in c %}{% set c = c.split('</think>')[-1] %}{% endif %}"
    "{{ '<｜Assistant｜>' + c + eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<｜Assistant｜>' }}{% endif %}"
)


def strip_reasoning(content: str) -> str:
    """What R1's template keeps of an assistant turn in the history: the text after the last `</think>`."""
    return content.split(THINK_END)[-1] if THINK_END in content else content


def render_chat(messages: list[dict], add_generation_prompt: bool = True, where: str = "messages") -> str:
    """The R1 chat template in Python (equal in effect to CHAT_TEMPLATE). `where` names the source in errors."""
    if not isinstance(messages, list):
        raise TinyseekError(f"{where}: expected a list of messages, got {type(messages).__name__}")
    parts = [BOS]
    for i, m in enumerate(messages):
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("content"), str)
            or m.get("role") not in ("system", "user", "assistant")
        ):
            raise TinyseekError(f"{where}[{i}]: a message needs role system|user|assistant and a string content")
    parts += [m["content"] for m in messages if m["role"] == "system"]
    for m in messages:
        if m["role"] == "user":
            parts.append(USER + m["content"])
        elif m["role"] == "assistant":
            parts.append(ASSISTANT + strip_reasoning(m["content"]) + EOS)
    if add_generation_prompt:
        parts.append(ASSISTANT)
    return "".join(parts)


def completion_text(rec: dict) -> str:
    """The R1-format completion for a task record: its trace in a think block, then its answer. An empty trace
    leaves the think block empty (one newline: a corpus file separates documents by blank lines)."""
    think = f"<think>\n{rec['solution']}\n</think>" if rec["solution"] else "<think>\n</think>"
    return f"{think}\n<answer>{rec['answer']}</answer>"


R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with the "
    "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> "
    "tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>. "
    "User: {prompt}. Assistant:"
)  # DeepSeek-R1 paper, Table 1: the prompt of R1-Zero, for base models that never saw the chat template
DIALOGUE_TEMPLATE = "User: {prompt}. Assistant:"  # R1-Zero's turn, without its preamble: a plain chat transcript
PROMPT_TEMPLATES = ("chat", "r1-zero")  # how a person's messages become a prompt: `render_prompt`


def render_r1_zero(messages: list[dict], where: str = "messages") -> str:
    """A conversation in R1-Zero's template, as a base model continues it (`training_text`'s "r1-zero" layout): the
    preamble with the first user turn, each assistant turn after a space (reduced as the chat template reduces it, to
    what follows `</think>`), each later user turn as the template's own `User: .... Assistant:`. No BOS (encode
    with it). The template has no system message."""
    render_chat(messages, where=where)  # the same checks of the messages
    if any(m["role"] == "system" for m in messages):
        raise TinyseekError(f"{where}: R1-Zero's template has no system message")
    text = ""
    for m in messages:
        if m["role"] == "user":
            turn = R1_ZERO_TEMPLATE if not text else DIALOGUE_TEMPLATE
            text += (" " if text else "") + turn.format(prompt=m["content"])
        elif text:
            text += " " + strip_reasoning(m["content"]).strip()
    if not text or messages[-1]["role"] != "user":
        raise TinyseekError(f"{where}: R1-Zero's template needs the conversation to end with a user turn")
    return text


def render_prompt(messages: list[dict], template: str = "chat", where: str = "messages") -> tuple[str, bool]:
    """The prompt text of a conversation in `template` (chat | r1-zero), and whether it is to be encoded with a BOS
    (the chat template writes its own)."""
    if template == "r1-zero":
        return render_r1_zero(messages, where), True
    if template != "chat":
        raise TinyseekError(f"prompt_template: must be one of {', '.join(PROMPT_TEMPLATES)} (got {template!r})")
    return render_chat(messages, add_generation_prompt=True, where=where), False


# how a solved problem is laid out as a training document (`training_text`)
LAYOUTS = ("plain", "chat", "dialogue", "r1-zero")


def training_text(rec: dict, fmt: str = "plain") -> str:
    """A solved task record as a training document. "plain" is the prompt, a newline and the completion; "chat"
    is the prompt in the chat template (without BOS: a document gets its own) and the completion, so pretraining
    already sees the SFT format; "r1-zero" is the prompt in R1-Zero's template, a space and the completion, as a
    base model continues that template; "dialogue" is the same turn without the template's preamble."""
    if fmt == "chat":
        return render_chat([{"role": "user", "content": rec["prompt"]}])[len(BOS) :] + completion_text(rec)
    if fmt in ("dialogue", "r1-zero"):
        template = DIALOGUE_TEMPLATE if fmt == "dialogue" else R1_ZERO_TEMPLATE
        return template.format(prompt=rec["prompt"]) + " " + completion_text(rec)
    if fmt != "plain":
        raise TinyseekError(f"layout: unknown document layout {fmt!r} (known: {', '.join(LAYOUTS)})")
    return rec["prompt"] + "\n" + completion_text(rec)
