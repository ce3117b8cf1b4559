"""Probe a checkpoint under the R1-Zero template: python probe.py CKPT DATA.jsonl [n=200] [k=8] [T=1.0] [maxnew=96]"""
import json, sys, re, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from tinyseek.inference.load import load_engine
from tinyseek.inference.sampling import SamplingParams
from tinyseek.r1 import R1_ZERO_TEMPLATE
from tinyseek.rewards import accuracy_reward

args = dict(a.split("=", 1) for a in sys.argv[3:])
n = int(args.get("n", 200)); K = int(args.get("k", 8)); T = float(args.get("T", 1.0)); maxnew = int(args.get("maxnew", 96))
torch.set_num_threads(int(args.get("threads", 1)))
recs = [json.loads(l) for l in open(sys.argv[2])][:n]
eng = load_engine(sys.argv[1], max_batch=256)
tok = eng.tokenizer
TPL = {"zero": R1_ZERO_TEMPLATE, "text": "{prompt}\n", "user": "User: {prompt}. Assistant:"}[args.get("tpl", "zero")]
prompts = [[tok.bos_id] + tok.encode(TPL.format(prompt=r["prompt"])) for r in recs]
t0 = time.time()
outs = []
for i in range(0, len(prompts), 32):
    outs += eng.generate(prompts[i:i+32], SamplingParams(temperature=T, top_p=float(args.get("top_p", 1.0)), max_new_tokens=maxnew, seed=int(args.get("seed", 0))), n=K, first=i)
def kind(text):
    think = text.split("</think>")[0] if "</think>" in text else text
    if " no" in think: return "fix"
    if "=" in think: return "work"
    return "bare"
stats = {}
per_problem = []
for r, group in zip(recs, outs):
    texts = [c.text for c in group]
    acc = accuracy_reward(None, texts, answer=[r["answer"]] * len(texts))
    per_problem.append(sum(acc) / len(acc))
    for c, a in zip(group, acc):
        k = kind(c.text)
        s = stats.setdefault((r["difficulty"], k), [0, 0, 0, 0])
        s[0] += 1; s[1] += a; s[2] += len(c.token_ids); s[3] += c.finish_reason == "length"
tot = sum(v[0] for v in stats.values())
print(f"{sys.argv[1]} T={T} n={n} K={K} pass@1={sum(per_problem)/len(per_problem):.3f} ({time.time()-t0:.0f}s)")
for d in sorted({d for d, _ in stats}):
    row = []
    for k in ("bare", "work", "fix"):
        s = stats.get((d, k), [0, 0, 0, 0])
        if s[0]: row.append(f"{k}: {s[0]/sum(v[0] for (dd,_),v in stats.items() if dd==d):.2f} share, acc {s[1]/s[0]:.2f}, len {s[2]/s[0]:.0f}, trunc {s[3]/s[0]:.2f}")
    print(f"  d={d}: " + " | ".join(row))
if args.get("show"):
    for r, group in list(zip(recs, outs))[:int(args["show"])]:
        print(repr(r["prompt"]), [c.text for c in group[:3]])
if args.get("showwork"):
    shown = 0
    for r, group in zip(recs, outs):
        for c in group:
            if "=" in c.text.split("</think>")[0] and shown < int(args["showwork"]):
                print(r["prompt"], r["answer"], repr(c.text)); shown += 1
if args.get("marks"):
    from tinyseek.tasks.base import behaviours
    from tinyseek.evaluate import reasoning_stats
    flat_t = [c.text for g in outs for c in g]; flat_l = [len(c.token_ids) for g in outs for c in g]
    flat_tr = [c.finish_reason == "length" for g in outs for c in g]
    flat_c = []
    for r, g in zip(recs, outs):
        flat_c += accuracy_reward(None, [c.text for c in g], answer=[r["answer"]] * len(g))
    print({k: (round(v, 3) if v is not None else None) for k, v in reasoning_stats(flat_t, flat_l, flat_tr, flat_c).items()})
    ch = [(t, c) for t, c in zip(flat_t, flat_c) if behaviours(t)["verifies"]]
    print("verifying completions:", len(ch), "acc", sum(c for _, c in ch) / max(1, len(ch)))
    for t, c in ch[:4]: print(c, repr(t))
