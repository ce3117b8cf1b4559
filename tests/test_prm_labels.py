"""Completion labels (Math-Shepherd) on a hand-made policy whose continuations are known: a step is good when one
of its continuations reaches the right answer (or by the share that do), the answer step is the trace's verdict."""

import pytest

from tinyseek.train.prm_labels import Prefix, completion_labels, is_right

REC = {"prompt": "53+68=", "answer": "121"}
RIGHT = "<think>\n3+8+0=11 5+6+1=12 so 121\n</think>\n<answer>121</answer>"
# a wrong operand whose result is still right (3+9+0=11: first-error labels call it bad), then a wrong carry
SLIP = "<think>\n3+9+0=11 5+6+0=11 so 111\n</think>\n<answer>111</answer>"


class HandMadePolicy:
    """Continues a prefix from a table: each known prefix's continuations, in order; records what it was asked."""

    def __init__(self, table: dict[str, list[str]]):
        self.table, self.asked = table, []

    def __call__(self, requests: list[Prefix], n: int) -> list[list[str]]:
        self.asked += [(r.text, n) for r in requests]
        return [self.table[r.text][:n] for r in requests]


def _good(answer: str) -> str:
    return f" ... so {answer}\n</think>\n<answer>{answer}</answer>"


TABLE = {
    # from the end of SLIP's first step (the slipped operand): 1 of 3 continuations reaches 121
    "<think>\n3+9+0=11": [_good("111"), _good("121"), _good("112")],
    # from its second step (the wrong carry, result 11): none can
    "<think>\n3+9+0=11 5+6+0=11": [_good("111"), _good("110"), _good("11")],
    # its third: "so 111"
    "<think>\n3+9+0=11 5+6+0=11 so 111": [_good("111")] * 3,
    "<think>\n3+8+0=11": [_good("121")] * 3,
    "<think>\n3+8+0=11 5+6+1=12": [_good("121"), _good("122"), _good("121")],
    "<think>\n3+8+0=11 5+6+1=12 so 121": [_good("121")] * 3,
}


def test_hard_labels_say_whether_a_continuation_can_still_reach_the_answer():
    pol = HandMadePolicy(TABLE)
    labels = completion_labels([(REC, SLIP), (REC, RIGHT)], pol, 3, " ")
    # SLIP: the slipped operand is still good (a continuation reaches 121), not first-error semantics; the wrong
    # carry and what follows are bad; the answer step is the trace's own verdict (wrong)
    assert labels[0] == [1.0, 0.0, 0.0, 0.0]
    assert labels[1] == [1.0, 1.0, 1.0, 1.0]
    # every reasoning step was asked for 3 continuations from exactly its text; the answer step never
    assert pol.asked == [(p, 3) for p in TABLE if p.startswith("<think>\n3+9")] + [
        (p, 3) for p in TABLE if p.startswith("<think>\n3+8")
    ]


def test_soft_labels_are_the_share_of_continuations_that_reach_the_answer():
    labels = completion_labels([(REC, SLIP), (REC, RIGHT)], HandMadePolicy(TABLE), 3, " ", soft=True)
    assert labels[0] == pytest.approx([1 / 3, 0.0, 0.0, 0.0])
    assert labels[1] == pytest.approx([1.0, 2 / 3, 1.0, 1.0])


def test_n_bounds_the_continuations_and_a_policy_returning_too_few_is_an_error():
    assert completion_labels([(REC, SLIP)], HandMadePolicy(TABLE), 1, " ") == [[0.0, 0.0, 0.0, 0.0]]  # 111 first
    with pytest.raises(ValueError, match="expected 4 continuations"):
        completion_labels([(REC, SLIP)], HandMadePolicy(TABLE), 4, " ")


def test_is_right_reads_the_final_answer_block():
    assert is_right(REC, RIGHT) and not is_right(REC, SLIP) and not is_right(REC, "<think>\n3+8+0=11")


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("labels", "reachability", "labels: must be corruption or completion"),
        ("label_continuations", 0, "label_continuations: must be >= 1"),
        ("label_n", -1, "label_n: must be >= 0"),
        ("label_temperature", 0.0, "label_temperature: must be > 0"),
    ],
)
def test_a_bad_labelling_field_is_named(field, value, match):
    from tinyseek.config import ConfigError
    from tinyseek.train.prm import PrmConfig

    with pytest.raises(ConfigError, match=match):
        PrmConfig(init="x", data=["d.jsonl"], **{field: value}).validate()
