"""Completion labels for a PRM (Math-Shepherd, Wang et al. 2024): what the policy's own continuations say of a step.

The policy samples a completion of each problem; from the end of each of its reasoning steps the policy samples
`n` continuations. A step is good when one of them reaches the right answer ("hard" labels: could the policy
still get there from here?) or, with soft labels, by the share that do. The answer step's label is the
completion's own verdict. No human and no worked solution is involved: the labels are the policy's own errors,
the distribution a PRM is then asked to judge in RL (truncations, repetitions, wrong carries), which is what the
synthetic-corruption labels (tinyseek.steps.corrupt) are not.

Unlike first-error labels they are not monotone: a wrong operand whose step result is still right (`5+4+0=08`
for `5+3+0=08`) is good here when the continuations still reach the answer, and a right step can be labelled
bad when every sampled continuation slips later (n is small). The price is the sampling: `n` continuations per
step of every labelled trace, counted with the PRM's training in its arm's compute budget.

    completion_labels(traces, continue_fn, n, sep, soft)   the labels, for any `continue_fn` (a test's
                                                           hand-made policy, or `PolicyContinuations`)
    sample_labelled(policy, records, ...)                  the policy's completions of the records, labelled,
                                                           and the sampling's FLOPs
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tinyseek.rewards import extract_answer, score_answer
from tinyseek.steps import step_spans, token_char_ends, token_step_ends


@dataclass
class Prefix:
    """A continuation request: a trace's record, its text up to a step's end, and (for a real policy) the token
    ids to continue from (the rendered prompt and the completion's tokens up to the step's last one)."""

    rec: dict
    text: str
    ids: list[int] | None = None


ContinueFn = Callable[[list[Prefix], int], list[list[str]]]  # (requests, n) -> n continuation texts per request


def is_right(rec: dict, text: str) -> bool:
    """The accuracy rule's verdict on a completion's final answer (the columns it reads: answer, task, ...)."""
    gold = {k: rec[k] for k in ("task", "numbers", "target") if k in rec}
    return score_answer(extract_answer(text), rec["answer"], **gold) == 1.0


def completion_labels(
    traces: list[tuple[dict, str]],
    continue_fn: ContinueFn,
    n: int,
    sep: str,
    soft: bool = False,
    ids: list[tuple[list[int], list[int]]] | None = None,
    char_ends=None,
) -> list[list[float]]:
    """One label per step of each (record, completion text) trace, the answer step last (tinyseek.steps' steps).

    A reasoning step's label is whether one of `n` continuations from its end reaches the right answer (soft:
    the share that do); the answer step's is whether the trace itself is right. `ids`: each trace's (prompt ids,
    completion ids), so that a real policy continues from its own tokens (`char_ends(ids)`: each token's end in
    the decoded text, where a step's last token is found); without them requests carry the text only.
    """
    requests, where = [], []
    for t, (rec, text) in enumerate(traces):
        spans = step_spans(text, sep)
        tok_ends = None
        if ids is not None:
            prompt_ids, comp_ids = ids[t]
            tok_ends = token_step_ends(spans, char_ends(comp_ids))
        for k, (_, b) in enumerate(spans[:-1]):
            pre = None if tok_ends is None else ids[t][0] + ids[t][1][: tok_ends[k] + 1]
            requests.append(Prefix(rec, text[:b], pre))
            where.append((t, k))
    conts = continue_fn(requests, n) if requests else []
    if len(conts) != len(requests) or any(len(c) != n for c in conts):
        raise ValueError(f"continue_fn: expected {n} continuations for each of {len(requests)} prefixes")
    labels = [[0.0] * len(step_spans(text, sep)) for _, text in traces]
    for (t, k), req, cs in zip(where, requests, conts):
        hits = [is_right(req.rec, req.text + c) for c in cs]
        labels[t][k] = sum(hits) / n if soft else float(any(hits))
    for t, (rec, text) in enumerate(traces):
        labels[t][-1] = float(is_right(rec, text))
    return labels


class PolicyContinuations:
    """`continue_fn` for a real policy (train/policy.Policy): `n` samples from each request's token ids at the
    labelling temperature, and the FLOPs they cost (each prefix prefilled once for its n samples, then every
    generated token)."""

    def __init__(self, policy, max_new_tokens: int, temperature: float, seed: int, max_batch: int = 256):
        self.policy, self.max_new_tokens, self.temperature, self.seed = policy, max_new_tokens, temperature, seed
        self.max_batch = max_batch
        self.flops = 0.0
        self.continuations = 0

    def sample(self, prompts: list[list[int]], n: int, seed: int):
        pol = self.policy
        out = pol.generate(
            prompts,
            n,
            self.max_new_tokens,
            self.temperature,
            seed=seed,
            max_batch=min(self.max_batch, len(prompts) * n),
        )
        self.flops += pol.sampling_flops(prompts, sum(len(c.token_ids) for c in out), self.max_new_tokens)
        return out

    def __call__(self, requests: list[Prefix], n: int) -> list[list[str]]:
        conts = self.sample([r.ids for r in requests], n, self.seed * 1_000_003 + 1)
        self.continuations += len(conts)
        return [[c.text or "" for c in conts[i * n : (i + 1) * n]] for i in range(len(requests))]


def sample_labelled(
    policy,
    records: list[dict],
    n: int,
    sep: str,
    soft: bool,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    template: str = "chat",
):
    """The policy's completion of each record (prompt, answer), its steps labelled by `completion_labels`.
    Returns (rows, stats): (the rendered prompt's ids, the sampled ids, each step's last token, their labels) per
    non-empty completion, and {"flops", "traces", "continuations", "right", "good_steps"}."""
    cont = PolicyContinuations(policy, max_new_tokens, temperature, seed)
    prompts = [policy.render(r["prompt"], template) for r in records]
    comps = cont.sample(prompts, 1, seed * 1_000_003)
    traces = [(r, c.text or "") for r, c in zip(records, comps)]
    cache: dict = {}
    char_ends = lambda ids: token_char_ends(policy.decode, ids, cache)  # noqa: E731
    ids = [(p, c.token_ids) for p, c in zip(prompts, comps)]
    labels = completion_labels(traces, cont, n, sep, soft, ids, char_ends)
    examples = []
    for (_, text), p, c, lab in zip(traces, prompts, comps, labels):
        if not c.token_ids:
            continue
        ends = token_step_ends(step_spans(text, sep), char_ends(c.token_ids))
        examples.append((p, list(c.token_ids), ends, lab))
    steps = [x for lab in labels for x in lab]
    stats = {
        "flops": cont.flops,
        "traces": len(traces),
        "continuations": cont.continuations,
        "right": sum(lab[-1] for lab in labels) / max(1, len(labels)),
        "good_steps": sum(steps) / max(1, len(steps)),
    }
    return examples, stats
