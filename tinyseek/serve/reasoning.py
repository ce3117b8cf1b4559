"""Split a completion into `reasoning_content` and `content`, token by token, for streaming.

A tinyseek completion reads `<think>\\n...\\n</think>\\n<answer>...</answer>` (R1's format). The
tags are single special tokens, so the split is exact at the token level:
- tokens after `<think>` and up to `</think>` are reasoning; the tags themselves are not shown, and
  `completion_tokens_details.reasoning_tokens` counts the tokens from the first completion token
  through `</think>` (tags included) when the completion reasons at all;
- everything else is the answer (`content`). `<answer>` and `</answer>` are dropped from the text
  (they are protocol, not prose), so a client sees `content = "42"`, not `"<answer>42</answer>"`;
- if the prompt already ends in `<think>` (a template that forces reasoning), the completion starts
  in reasoning; a completion that never opens `<think>` is all content.
Leading and trailing whitespace of each part is dropped (the newlines around the tags); whitespace
inside a part is held back until the next visible character arrives.

Text is decoded incrementally: only the tokens since the last whole-character boundary are re-decoded,
and the new suffix is held back while it ends in an incomplete UTF-8 character (U+FFFD from
byte-level BPE). `ReasoningSplitter(..., incremental=False)` decodes every part whole each time: the
plain reference, held equal to the incremental path in tests.
Stop strings (the request's `stop`) are matched on each part's text; the text from the stop string on
is never emitted, and text that could still become a stop string is held back until it cannot.
"""

from __future__ import annotations

REASONING, CONTENT = "reasoning_content", "content"


class _Part:
    def __init__(self):
        self.ids: list[int] = []
        self.text = ""  # decoded so far (whole, including held back)
        self.sent = 0  # characters of self.text already emitted
        self.started = False  # a non-whitespace character has been emitted
        self.clean_ids = 0  # ids[:clean_ids] decode to clean_text, ending on a whole character
        self.clean_text = ""

    def append(self, tok, token_id: int) -> None:
        """Extend the text by one token. Byte-level BPE decodes a concatenation to the concatenation of the
        bytes, so text up to a whole-character boundary never changes: only the tail is re-decoded, which
        keeps a long completion linear rather than quadratic in its length."""
        self.ids.append(token_id)
        tail = tok.decode(self.ids[self.clean_ids:])
        self.text = self.clean_text + tail
        if not tail.endswith("\ufffd"):
            self.clean_ids, self.clean_text = len(self.ids), self.text


class ReasoningSplitter:
    """Feed completion token ids one at a time; get (field, text) deltas back."""

    def __init__(self, tokenizer, stops: list[str] | tuple = (), start_in_reasoning: bool = False, incremental: bool = True):
        self.tok = tokenizer
        self.incremental = incremental
        self.stops = [s for s in stops if s]
        tid = tokenizer.token_id
        self.think, self.end_think = tid("<think>"), tid("</think>")
        self.answer, self.end_answer = tid("<answer>"), tid("</answer>")
        self.eos = tokenizer.eos_id
        self.mode = REASONING if start_in_reasoning else None  # None: nothing seen yet
        self.parts = {REASONING: _Part(), CONTENT: _Part()}
        self.n_tokens = 0
        self.reasoning_tokens = 0
        self.stopped = False  # a stop string was found: the caller should end the request

    def feed(self, token_id: int) -> list[tuple[str, str]]:
        if self.stopped:
            return []
        self.n_tokens += 1
        if self.mode == REASONING:
            self.reasoning_tokens = self.n_tokens
        if token_id == self.eos:
            return []
        if token_id == self.think and self.mode is None:
            self.mode = REASONING
            self.reasoning_tokens = self.n_tokens
            return []
        if token_id == self.end_think and self.mode in (None, REASONING):
            out = self._flush(REASONING)
            self.mode = CONTENT
            return out
        if token_id in (self.answer, self.end_answer):
            if self.mode is None:
                self.mode = CONTENT
            return []
        if self.mode is None:
            self.mode = CONTENT
        part = self.parts[self.mode]
        if self.incremental:
            part.append(self.tok, token_id)
        else:
            part.ids.append(token_id)
            part.text = self.tok.decode(part.ids)
        return self._emit(self.mode, final=False)

    def finish(self) -> list[tuple[str, str]]:
        """Flush what was held back (the end of the completion: nothing more can complete it)."""
        if self.stopped:
            return []
        return self._flush(self.mode) if self.mode else []

    def _flush(self, field: str) -> list[tuple[str, str]]:
        return self._emit(field, final=True)

    def _emit(self, field: str, final: bool) -> list[tuple[str, str]]:
        part = self.parts[field]
        text = part.text
        if not final and text.endswith("\ufffd"):
            return []
        # a stop string anywhere in the not-yet-confirmed text ends the completion there
        for s in self.stops:
            at = text.find(s, max(0, part.sent - len(s) + 1))
            if at != -1:
                text = text[:at]
                self.stopped = True
        end = len(text)
        if not final and not self.stopped:
            # hold back a suffix that could be the start of a stop string
            for s in self.stops:
                for k in range(min(len(s) - 1, len(text)), 0, -1):
                    if text.endswith(s[:k]):
                        end = min(end, len(text) - k)
                        break
        end = len(text[:end].rstrip())  # trailing whitespace waits for more text, and is dropped at the end
        end = max(end, part.sent)
        delta = text[part.sent:end]
        part.sent = end
        if not part.started:
            delta = delta.lstrip()
            part.started = bool(delta)
        return [(field, delta)] if delta else []

    def result(self) -> tuple[str | None, str]:
        """(reasoning_content or None, content) as emitted."""
        r, c = self.parts[REASONING], self.parts[CONTENT]
        reasoning = r.text[:r.sent].lstrip() if (self.reasoning_tokens or r.ids) else None
        return reasoning, c.text[:c.sent].lstrip()
