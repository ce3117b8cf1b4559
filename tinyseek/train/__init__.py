"""Training: the loop every stage shares, and one stage per command.

- `loop.py`         — optimizer, schedule, precision, checkpoints and resume, metrics, cost,
- `parallel.py`     — DDP or FSDP2, expert parallelism, sharded checkpoints: applied from outside the model,
- `pretrain.py`     — next-token prediction on packed documents (task traces + plain text),
- `sft.py`          — cold-start supervised fine-tuning in the R1 chat format, loss on assistant tokens only,
- `grpo.py`         — reinforcement learning with rule rewards (the stage), over `grpo_loss.py` (the maths)
                      and `policy.py` (the model it trains and samples, tinyseek or transformers), with
                      `rollout.py` (where completions come from: this process's engine or an inference server)
                      and `process_reward.py` (step rewards for process supervision: the oracle or `prm.py`),
- `rejection.py`    — rejection sampling (`tinyseek sample`): verified completions as an SFT dataset,
- `distill.py`      — a student trained on a teacher's outputs, over `distill_loss.py` (the KD maths).

`loop.py`'s docstring describes how a stage plugs in (a `train_step(loop)` method, optional
`evaluate`, `state_dict`, `load_state_dict`); the stage commands read their configs with `config.stage_cli`.
"""
