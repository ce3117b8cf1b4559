"""Split a completion's streamed text into `reasoning_content` and `content`, and count its reasoning tokens.

A tinyseek completion reads `<think>\\n...\\n</think>\\n<answer>...</answer>` (R1's format). The splitter
reads the text as the engine streams it, which is already final: stop tokens are left out and stop strings
cut by the engine (it owns the stop rules, and stops a row in the very step that completes one). The server's
chat endpoint and the terminal chat (`tinyseek chat`, `tinyseek generate` on a terminal) both split with it.
- a completion that opens with `<think>` (after any whitespace: R1-Zero's template ends in `Assistant:`) is
  reasoning up to `</think>`, or up to `<answer>` when the model skips `</think>`;
- everything else is the answer (`content`);
- the tags themselves are never shown, wherever they come: `<answer>` and `</answer>` are protocol, not prose, so
  a client sees `content = "42"`, not `"<answer>42</answer>"`, and a model that did not open with `<think>` but
  writes `</think>` later (an undertrained one does) leaks no tag into `content`;
- if the prompt already ends in `<think>` (a template that forces reasoning), the completion starts in
  reasoning; a completion that never opens `<think>` is all content.
Leading and trailing whitespace of each part is dropped (the newlines around the tags); whitespace inside
a part is held back until the next visible character arrives, and so is a tail that could still become a
tag. How the text is cut into pieces never changes the result (tests hold it to feeding the text whole).

The tags are special tokens of tinyseek's tokenizer, so in the text they only ever come from those tokens.
`reasoning_tokens` counts, from the token ids, the tokens from the completion's start through `</think>`
(tags included) when it reasons at all: the `completion_tokens_details.reasoning_tokens` a request is billed.
"""

from __future__ import annotations

from tinyseek.r1 import ANSWER, ANSWER_END, THINK, THINK_END

REASONING, CONTENT = "reasoning_content", "content"
TAGS = (THINK, THINK_END, ANSWER, ANSWER_END)  # never shown
_ENDS_REASONING = (THINK_END, ANSWER)  # in the reasoning, the answer starts at either


def reasoning_tokens(ids: list[int], think_id: int, end_think_id: int, start_in_reasoning: bool = False) -> int:
    """Tokens from the completion's start through its first `</think>` (all of them while it is still reasoning)
    if it reasons at all (opens with `<think>`, or starts inside it); 0 otherwise."""
    if not ids or not (start_in_reasoning or ids[0] == think_id):
        return 0
    return ids.index(end_think_id) + 1 if end_think_id in ids else len(ids)


class _Part:
    def __init__(self):
        self.text = ""  # placed so far (including what is held back)
        self.sent = 0  # characters of text already emitted
        self.started = False  # a non-whitespace character has been emitted


class ReasoningSplitter:
    """Feed the completion's text pieces as they stream; get (field, text) deltas back."""

    def __init__(self, start_in_reasoning: bool = False):
        self.mode = REASONING if start_in_reasoning else None  # None: nothing decided yet
        self.reasoned = start_in_reasoning
        self.parts = {REASONING: _Part(), CONTENT: _Part()}
        self.buf = ""  # text not yet placed in a part: it may be the start of a tag

    def feed(self, text: str) -> list[tuple[str, str]]:
        self.buf += text
        out: list[tuple[str, str]] = []
        while self.buf:
            if self.mode is None:  # the first visible characters decide: reasoning, or straight to the answer
                head = self.buf.lstrip()
                if not head or (THINK.startswith(head) and head != THINK):
                    break  # only whitespace yet, or what may still become <think>
                if head.startswith(THINK):
                    self.buf, self.mode, self.reasoned = head[len(THINK) :], REASONING, True
                else:
                    self.buf, self.mode = head, CONTENT
                continue
            hits = [(self.buf.find(t), t) for t in TAGS if t in self.buf]
            if not hits:  # place everything but a tail that could still become a tag
                keep = max((k for t in TAGS for k in range(1, len(t)) if self.buf.endswith(t[:k])), default=0)
                self.parts[self.mode].text += self.buf[: len(self.buf) - keep]
                self.buf = self.buf[len(self.buf) - keep :]
                break
            at, tag = min(hits)
            self.parts[self.mode].text += self.buf[:at]
            self.buf = self.buf[at + len(tag) :]
            if self.mode == REASONING and tag in _ENDS_REASONING:
                out += self._emit(REASONING)
                self.mode = CONTENT
        return out + (self._emit(self.mode) if self.mode else [])

    def finish(self) -> list[tuple[str, str]]:
        """Flush what was held back (the end of the completion: nothing more can complete it)."""
        if self.buf.strip():
            self.mode = self.mode or CONTENT
            self.parts[self.mode].text += self.buf
        self.buf = ""
        return self._emit(self.mode) if self.mode else []

    def _emit(self, field: str) -> list[tuple[str, str]]:
        part = self.parts[field]
        end = max(
            len(part.text.rstrip()), part.sent
        )  # trailing whitespace waits for more text, and is dropped at the end
        delta = part.text[part.sent : end]
        part.sent = end
        if not part.started:
            delta = delta.lstrip()
            part.started = bool(delta)
        return [(field, delta)] if delta else []

    def result(self) -> tuple[str | None, str]:
        """(reasoning_content or None, content) as emitted."""
        r, c = self.parts[REASONING], self.parts[CONTENT]
        return (r.text[: r.sent].lstrip() if self.reasoned else None), c.text[: c.sent].lstrip()
