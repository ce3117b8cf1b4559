"""Pretrain with one document per row (padded), vs packing: python docrows.py CORPUS TOKDIR OUT steps=.. batch=.. lr=.. preset=moe|dense"""
import sys, json, math, random, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from tinyseek.tokenizer import Tokenizer
from tinyseek.config import ModelConfig
from tinyseek.model import Transformer
from tinyseek.checkpoint import save_checkpoint
args = dict(a.split("=", 1) for a in sys.argv[4:])
steps = int(args.get("steps", 300)); B = int(args.get("batch", 32)); lr = float(args.get("lr", 2e-3)); seed = int(args.get("seed", 0))
torch.manual_seed(seed); random.seed(seed)
tok = Tokenizer.load(sys.argv[2])
docs = [d for d in open(sys.argv[1]).read().split("\n\n") if d.strip()]
ids = [[tok.bos_id] + x + [tok.eos_id] for x in tok.encode_batch(docs)]
ids = [x[:160] for x in ids]
if args.get("preset", "moe") == "moe":
    cfg = ModelConfig.preset("tiny", vocab_size=tok.vocab_size, dim=128, q_lora_rank=64, kv_lora_rank=32, inter_dim=384, moe_inter_dim=64, n_routed_experts=8, n_activated_experts=2, max_seq_len=320, rope_theta=500.0)
else:
    cfg = ModelConfig.preset("tiny-dense", vocab_size=tok.vocab_size, dim=128, kv_lora_rank=64, inter_dim=384, max_seq_len=320, rope_theta=500.0)
model = Transformer(cfg)
opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
order = list(range(len(ids))); random.shuffle(order); pos = 0
t0 = time.time(); ntok = 0
sortk = int(args.get("sortk", 0))
for step in range(steps):
    warm = min(1.0, (step + 1) / 20); cos = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps))
    for g in opt.param_groups: g["lr"] = lr * warm * cos
    if pos + B > len(order): random.shuffle(order); pos = 0
    batch = [ids[i] for i in order[pos:pos + B]]; pos += B
    L = max(len(x) for x in batch)
    x = torch.full((B, L - 1), tok.pad_id); y = torch.full((B, L - 1), -100)
    for b, d in enumerate(batch):
        x[b, :len(d) - 1] = torch.tensor(d[:-1]); y[b, :len(d) - 1] = torch.tensor(d[1:])
    ntok += int((y != -100).sum())
    out = model(x, targets=y)
    opt.zero_grad(); out.loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step()
    if out.expert_load is not None and out.expert_load.numel(): model.update_expert_bias(out.expert_load)
    if step % 50 == 0 or step == steps - 1:
        print(step, round(float(out.ce_loss), 4), f"{ntok / (time.time() - t0):.0f} tok/s", flush=True)
save_checkpoint(model, Path(sys.argv[3]), tokenizer_file=Path(sys.argv[2]) / "tokenizer.json")
print("saved", sys.argv[3], "tokens", ntok, "time", round(time.time() - t0))
