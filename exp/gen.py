"""Experiment corpus for R1-Zero (throwaway): python gen.py OUT [key=value ...]"""
import json, random, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tinyseek import tasks as T
from tinyseek.r1 import R1_ZERO_TEMPLATE, completion_text
from tinyseek.tasks.arithmetic import add_trace

args = dict(a.split("=", 1) for a in sys.argv[2:])
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
N = int(args.get("n", 16000))
seed = int(args.get("seed", 0))
diff = [int(x) for x in args.get("diff", "2,3,4").split(",")]
cdiff = [int(x) for x in args.get("cdiff", "1,2,3,4").split(",")]
p_text = float(args.get("textbook", 0.5))     # plain worked docs
p_work = float(args.get("work", 0.12))        # share of conversational docs that are worked
p_fix = float(args.get("fix", 0.03))          # share of conversational docs that are worked with a corrected step
p_head = float(args.get("head", 1.0))         # share of conversational docs with the full R1-Zero header
rng = random.Random(seed)
task = T.get("addition")
PART = {"corpus": (0.0, 0.4), "rl": (0.4, 0.9), "sft": (0.9, 1.0)}

def fixed_trace(a, b):
    """add_trace with one column first written wrong, then ' no' and the right column."""
    ra, rb = str(a)[::-1], str(b)[::-1]
    carry, parts = 0, []
    n = max(len(ra), len(rb)); k = rng.randrange(n)
    for i in range(n):
        x = int(ra[i]) if i < len(ra) else 0
        y = int(rb[i]) if i < len(rb) else 0
        s = x + y + carry
        if i == k:
            w = s + rng.choice([-2, -1, 1, 2])
            if w < 0: w = s + 1
            parts.append(f"{x}+{y}+{carry}={w:02d} no")
        parts.append(f"{x}+{y}+{carry}={s:02d}")
        carry = s // 10
    return " ".join(parts) + f" so {a + b}"

recs = task.generate(N, seed=seed, split="train", difficulty=cdiff, part=PART["corpus"])
docs = []
kinds = {"textbook": 0, "bare": 0, "work": 0, "fix": 0}
for r in recs:
    u = rng.random()
    if u < p_text:
        if args.get("tb", "plain") == "user":
            docs.append(f"User: {r['prompt']}. Assistant: " + completion_text(r))
        else:
            docs.append(r["prompt"] + "\n" + completion_text(r))
        kinds["textbook"] += 1; continue
    v = rng.random()
    a, b = map(int, r["prompt"].rstrip("=").split("+"))
    if v < p_fix:
        sol = fixed_trace(a, b); kinds["fix"] += 1
    elif v < p_fix + p_work:
        sol = r["solution"]; kinds["work"] += 1
    else:
        sol = ""; kinds["bare"] += 1
    comp = completion_text({**r, "solution": sol}).replace("<think>\n\n</think>", "<think>\n</think>")
    if rng.random() < p_head:
        docs.append(R1_ZERO_TEMPLATE.format(prompt=r["prompt"]) + " " + comp)
    else:
        docs.append(f"User: {r['prompt']}. Assistant: " + comp)
(out / "corpus.txt").write_text("\n\n".join(docs) + "\n")
for name, n in [("rl", int(args.get("rl", 4000))), ("sft", 1000)]:
    rs = task.generate(n, seed=seed, split="train", difficulty=diff, part=PART[name], unique=True)
    with open(out / f"{name}.jsonl", "w") as f:
        for r in rs: f.write(json.dumps(r) + "\n")
rs = task.generate(int(args.get("test", 400)), seed=0, split="test", difficulty=diff, unique=True)
with open(out / "test.jsonl", "w") as f:
    for r in rs: f.write(json.dumps(r) + "\n")
ood = task.generate(400, seed=0, split="test", difficulty=[5], unique=True)
with open(out / "ood.jsonl", "w") as f:
    for r in ood: f.write(json.dumps(r) + "\n")
print(kinds)
