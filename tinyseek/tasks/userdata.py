"""Users' own problems as task records: JSONL, Parquet, or a Hugging Face `datasets` directory.

Each row needs a question (`prompt` or `question`; a string, or a chat list of messages) and an `answer`.
GSM8K-style answers (`reasoning ... #### 42`) keep the final value as the answer, and the reasoning (with
GSM8K's `<<48/2=24>>` calculator notes removed, ending in the answer) as the solution; a `solution` column
wins over that. Other columns (`task`, `numbers`, `target`, ...) are kept, so a user's countdown file is
checked by the countdown verifier. File reading (and its file:line errors) is tinyseek.io.read_rows.
"""

from __future__ import annotations

import re
from pathlib import Path

from tinyseek.errors import TinyseekError

_CALC_NOTE_RE = re.compile(r"<<[^<>]*>>")


def _is_messages(x) -> bool:
    return isinstance(x, list) and bool(x) and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in x)


def row_to_record(row, where: str, index: int, source: str) -> dict:
    """One user row as a record {id, task, prompt, answer, solution, difficulty, ...}; `where` names file:line."""
    if not isinstance(row, dict):
        raise TinyseekError(
            f"{where}: expected an object with 'prompt' (or 'question') and 'answer', got {type(row).__name__}"
        )
    prompt = row.get("prompt", row.get("question"))
    if prompt is None:
        raise TinyseekError(f"{where}: missing field 'prompt' (or 'question')")
    if not (isinstance(prompt, str) or _is_messages(prompt)):
        raise TinyseekError(f"{where}: field 'prompt' must be a string or a list of messages")
    raw = row.get("answer")
    if raw is None or isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise TinyseekError(f"{where}: missing or non-scalar field 'answer'")
    raw = str(raw)
    reasoning = ""
    if "####" in raw:
        reasoning, _, answer = raw.rpartition("####")
        reasoning = _CALC_NOTE_RE.sub("", reasoning).strip()
    else:
        answer = raw
    answer = answer.strip().replace(",", "") if re.fullmatch(r"\s*-?[\d,]+(\.\d+)?\s*", answer) else answer.strip()
    if not answer:
        raise TinyseekError(f"{where}: field 'answer' is empty")
    solution = row.get("solution")
    if not isinstance(solution, str) or not solution.strip():
        solution = reasoning
        if not solution.endswith(answer):
            solution = f"{solution}\n{answer}".strip()
    rec = dict(row)
    rec.pop("question", None)
    rec.update(
        id=str(row.get("id", f"{source}-{index}")),
        task=row.get("task") or "user",
        prompt=prompt,
        answer=answer,
        solution=solution,
        difficulty=row.get("difficulty"),
    )
    return rec


def load_records(path) -> list[dict]:
    """All rows of a user dataset as records. A bad row raises TinyseekError naming the file and line (row).
    (A DatasetDict directory contributes its "train" split, as tinyseek.io.read_rows reads it.)"""
    from tinyseek.io import read_rows

    p = Path(path)
    if not p.exists():
        raise TinyseekError(f"{p}: no such file or directory")
    source = p.stem or p.name
    return [row_to_record(row, where, i, source) for i, (where, row) in enumerate(read_rows(p))]
