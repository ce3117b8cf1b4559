"""Templated multi-step word problems (GSM8K-like: quantities, rates, totals) in English and in Chinese.

Two kinds of problem:
- a chain: someone starts with some things, then `difficulty` events happen (buys packs, gets some, gives
  some away, sells half), and the question asks how many are left;
- fixed rate/total templates with a known number of calculations: distance = speed x time (1), production
  over hours and days (2), a shopping bill (3), the change from a bill (4).

Difficulty = the number of calculations (1..5). Answers are non-negative integers. A trace writes one
short clause per calculation, in the problem's language, and ends in the answer:

    Tom has 12 apples. He buys 3 bags with 4 apples each. He gives 5 apples to Anna. How many apples does
    Tom have now?
        buys 3*4=12, 12+12=24; gives 5, 24-5=19; answer 19
    小明有12个苹果。他买了3袋，每袋4个。他给了小红5个。小明现在有多少个苹果？
        买了3*4=12个，12+12=24；给出5个，24-5=19；答案是19

The canonical problem is the template and its numbers (not the names, items or language), so an English
problem and its Chinese twin always fall on the same side of the split.
"""

from __future__ import annotations

import random

from tinyseek.tasks.base import Task

NAMES = {
    "en": [
        ("Tom", "He", "him"),
        ("Anna", "She", "her"),
        ("Ben", "He", "him"),
        ("Lily", "She", "her"),
        ("Sam", "He", "him"),
        ("Mia", "She", "her"),
        ("Leo", "He", "him"),
        ("Emma", "She", "her"),
    ],
    "zh": [
        ("小明", "他", "他"),
        ("小红", "她", "她"),
        ("小刚", "他", "他"),
        ("小丽", "她", "她"),
        ("小华", "他", "他"),
        ("小芳", "她", "她"),
        ("小军", "他", "他"),
        ("小雪", "她", "她"),
    ],
}
ITEMS = {  # (plural, counter word in Chinese)
    "en": [("apples", ""), ("marbles", ""), ("stickers", ""), ("books", ""), ("pencils", ""), ("cookies", "")],
    "zh": [("苹果", "个"), ("弹珠", "颗"), ("贴纸", "张"), ("书", "本"), ("铅笔", "支"), ("饼干", "块")],
}

# chain events: (kind, text en, text zh, trace en, trace zh); {n}{m} are numbers, {cur}/{new} the count
EVENTS = {
    "buy": (
        "{P} buys {n} bags with {m} {item} each.",
        "{p}买了{n}袋，每袋{m}{u}。",
        "buys {n}*{m}={nm}, {cur}+{nm}={new}",
        "买了{n}*{m}={nm}{u}，{cur}+{nm}={new}",
    ),
    "get": (
        "{F} gives {o} {n} more {item}.",
        "{f}又给了{p}{n}{u}。",
        "gets {n}, {cur}+{n}={new}",
        "得到{n}{u}，{cur}+{n}={new}",
    ),
    "give": (
        "{P} gives {n} {item} to {F}.",
        "{p}给了{f}{n}{u}。",
        "gives {n}, {cur}-{n}={new}",
        "给出{n}{u}，{cur}-{n}={new}",
    ),
    "half": ("{P} sells half of them.", "{p}卖掉了一半。", "sells half, {cur}/2={new}", "卖掉一半，{cur}/2={new}"),
}

FIXED = {  # name -> (calculations, en, zh, trace en, trace zh)
    "speed": (
        1,
        "A train travels at {a} km per hour for {b} hours. How many km does it travel?",
        "一列火车每小时行驶{a}千米，行驶了{b}小时。它一共行驶了多少千米？",
        "distance {a}*{b}={r}",
        "路程{a}*{b}={r}",
    ),
    "factory": (
        2,
        "A machine makes {a} toys per hour. It works {b} hours a day for {c} days. How many toys does it make?",
        "一台机器每小时做{a}个玩具，每天工作{b}小时，工作了{c}天。它一共做了多少个玩具？",
        "per day {a}*{b}={ab}, in {c} days {ab}*{c}={r}",
        "每天{a}*{b}={ab}个，{c}天{ab}*{c}={r}个",
    ),
    "shopping": (
        3,
        "{N} buys {a} pens at {b} dollars each and {c} notebooks at {d} dollars each. How many dollars does {N} spend?",
        "{N}买了{a}支笔，每支{b}元，又买了{c}本笔记本，每本{d}元。{N}一共花了多少元？",
        "pens {a}*{b}={ab}, notebooks {c}*{d}={cd}, total {ab}+{cd}={r}",
        "笔{a}*{b}={ab}元，笔记本{c}*{d}={cd}元，一共{ab}+{cd}={r}元",
    ),
    "change": (
        4,
        "{N} buys {a} pens at {b} dollars each and {c} notebooks at {d} dollars each, and pays with {e} dollars. "
        "How many dollars of change does {N} get?",
        "{N}买了{a}支笔，每支{b}元，又买了{c}本笔记本，每本{d}元，付了{e}元。应该找回多少元？",
        "pens {a}*{b}={ab}, notebooks {c}*{d}={cd}, total {ab}+{cd}={t}, change {e}-{t}={r}",
        "笔{a}*{b}={ab}元，笔记本{c}*{d}={cd}元，一共{ab}+{cd}={t}元，找回{e}-{t}={r}元",
    ),
}
FIXED_BY_STEPS = {steps: name for name, (steps, *_) in FIXED.items()}
ANSWER_WORDS = {"en": "answer ", "zh": "答案是"}
CLAUSE_SEP = {"en": "; ", "zh": "；"}


def _rand(rng: random.Random, lo: int, hi: int) -> int:
    return lo + int(rng.random() * (hi - lo + 1))


def _draw_chain(rng: random.Random, steps: int):
    start = _rand(rng, 2, 30)
    cur, events = start, []
    for _ in range(steps):
        r = rng.random()
        if r < 0.3:
            n, m = _rand(rng, 2, 6), _rand(rng, 2, 10)
            events.append(("buy", n, m))
            cur += n * m
        elif r < 0.55 or cur < 3:
            n = _rand(rng, 2, 15)
            events.append(("get", n, 0))
            cur += n
        elif r < 0.8 or cur % 2:
            n = _rand(rng, 2, cur - 1)
            events.append(("give", n, 0))
            cur -= n
        else:
            events.append(("half", 0, 0))
            cur //= 2
    key = f"chain|{start}|" + "|".join(f"{k}:{n}:{m}" for k, n, m in events)
    return key, ("chain", start, events)


def _draw_fixed(rng: random.Random, name: str):
    r = rng.random
    if name == "speed":
        nums = {"a": 20 + int(r() * 101), "b": 2 + int(r() * 8)}
    elif name == "factory":
        nums = {"a": 2 + int(r() * 11), "b": 2 + int(r() * 11), "c": 2 + int(r() * 8)}
    else:
        nums = {"a": 2 + int(r() * 11), "b": 2 + int(r() * 11), "c": 2 + int(r() * 8), "d": 2 + int(r() * 14)}
        if name == "change":
            total = nums["a"] * nums["b"] + nums["c"] * nums["d"]
            nums["e"] = (total // 10 + 1 + int(r() * 5)) * 10  # a round bill above the total
    # the key holds exactly the numbers the text shows: two keys never print as the same problem
    return f"{name}|" + ",".join(map(str, nums.values())), (name, nums)


class WordProblems(Task):
    family = "wordproblems"
    difficulties = range(1, 6)
    default_difficulty = 2
    difficulty_meaning = "calculations"

    def __init__(self, name: str = "wordproblems", lang: str = "en"):
        if lang not in NAMES:
            raise ValueError(f"wordproblems: lang must be 'en' or 'zh', got {lang!r}")
        self.name, self.lang = name, lang
        self.description = (
            f"GSM8K-like multi-step word problems in {'English' if lang == 'en' else 'Chinese'}, integer answers"
        )

    def draw(self, rng: random.Random, difficulty: int):
        if difficulty in FIXED_BY_STEPS and rng.random() < 0.5:
            return _draw_fixed(rng, FIXED_BY_STEPS[difficulty])
        return _draw_chain(rng, difficulty)

    def build(self, rng: random.Random, problem, difficulty: int) -> dict:
        zh = self.lang == "zh"
        (name, pron, obj), (friend, _, _) = rng.sample(NAMES[self.lang], 2)
        if problem[0] == "chain":
            _, start, events = problem
            item, unit = ITEMS[self.lang][int(rng.random() * len(ITEMS[self.lang]))]
            fill = {"P": pron, "p": pron, "o": obj, "F": friend, "f": friend, "item": item, "u": unit}
            sentences = [f"{name}有{start}{unit}{item}。" if zh else f"{name} has {start} {item}."]
            clauses, cur = [], start
            for kind, n, m in events:
                new = (
                    cur + n * m
                    if kind == "buy"
                    else cur + n
                    if kind == "get"
                    else cur - n
                    if kind == "give"
                    else cur // 2
                )
                text_en, text_zh, trace_en, trace_zh = EVENTS[kind]
                values = {**fill, "n": n, "m": m, "nm": n * m, "cur": cur, "new": new}
                sentences.append((text_zh if zh else text_en).format(**values))
                clauses.append((trace_zh if zh else trace_en).format(**values))
                cur = new
            question = f"{name}现在有多少{unit}{item}？" if zh else f"How many {item} does {name} have now?"
            prompt = ("" if zh else " ").join(sentences + [question])
            answer = cur
        else:
            tname, nums = problem
            _, text_en, text_zh, trace_en, trace_zh = FIXED[tname]
            values = {**nums, "N": name}
            a, b, c, d = nums["a"], nums["b"], nums.get("c", 0), nums.get("d", 0)
            values.update(ab=a * b, cd=c * d, t=a * b + c * d)
            answer = {
                "speed": a * b,
                "factory": a * b * c,
                "shopping": a * b + c * d,
                "change": nums.get("e", 0) - (a * b + c * d),
            }[tname]
            values["r"] = answer
            prompt = (text_zh if zh else text_en).format(**values)
            clauses = [(trace_zh if zh else trace_en).format(**values)]
        solution = CLAUSE_SEP[self.lang].join(clauses) + CLAUSE_SEP[self.lang] + ANSWER_WORDS[self.lang] + str(answer)
        return {"prompt": prompt, "answer": str(answer), "solution": solution, "lang": self.lang}
