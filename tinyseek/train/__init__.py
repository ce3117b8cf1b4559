"""Training stages. Each is one command built on the shared loop in `tinyseek.train.loop`:

- `pretrain.py` — next-token prediction on packed documents (task traces + plain text),
- `sft.py`      — cold-start supervised fine-tuning in the R1 chat format, loss on assistant tokens only,
- `grpo.py`     — reinforcement learning with rule rewards (group-relative advantages),
- `distill.py`  — a student trained on a teacher's outputs.

`loop.py`'s docstring describes how a stage plugs in (a `train_step(loop)` method, optional
`evaluate`, `state_dict`, `load_state_dict`) and holds the config/CLI plumbing the stage commands share.
"""
