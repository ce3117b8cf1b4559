"""Parallelism applied from outside the single-device model: DDP or FSDP2, expert parallelism, sharded checkpoints.

torchtitan's pattern: `model.py` is written for one device and knows nothing of what is here. `wrap_model`
is the one place a training stage's model is parallelised, in a fixed order:

1. Expert parallelism (`ep` > 1): every DeepSeekMoE block's routed experts are replaced by
   `ExpertParallelExperts`, which holds this rank's `n_routed_experts / ep` experts (a DTensor sharded on the
   expert dimension over the EP group) and sends each routed token to the rank that holds its expert with
   `all_to_all_single` (and the expert's output back the same way). The gate and the shared expert stay
   replicated; `MoE.forward` is unchanged: it calls `experts.sorted(...)` / `experts.loop(...)` /
   `experts.dense(...)` as before, and the local computation is the single-device `Experts` code on the local
   weights. Every one of those calls dispatches with all_to_all: `MoE` picks its branch from this rank's token
   count (`model.use_dense`: a few rows per expert and more than one thread), and ranks with different counts
   must still make the same collectives, so under EP `dense` is the sorted dispatch (a dense product over
   every expert would need every expert's weights here). `moe_impl = "dense"` (every expert on every token)
   is refused with `ep` > 1 for the same reason. EP groups are
   consecutive ranks (0..ep-1, ep..2ep-1, ...); the ranks that hold the same experts form the expert-data-
   parallel group, over which the experts' gradients are summed (`finish_gradients`).
2. Data parallelism over all ranks: `parallel = "ddp"` (DistributedDataParallel; the EP experts are left
   out of its all-reduce) or `parallel = "fsdp"` (FSDP2, `fully_shard` on every transformer block, the MTP
   modules' included, then on the root; bf16 parameters with float32 gradient reduction when `dtype = "bfloat16"`).
   With EP as well, FSDP2 leaves the EP experts out (`ignored_params`): they stay sharded over their EP group and
   their gradients are summed as under DDP (`finish_gradients`), so the mesh is two-dimensional in effect (experts
   over `ep` within groups, everything else over all ranks); under the bf16 policy the experts compute on bf16
   copies of their float32 weights, like the rest of the block. The clipping sums each mesh's shards.
3. `torch.compile`, if asked.

Gradient scale. The loop multiplies each rank's loss by the world size because DDP and FSDP *average*
gradients over ranks; an EP expert's gradient is instead already the sum of every EP rank's contribution
(the backward all_to_all brings them home), so `finish_gradients` sums it over the expert-data-parallel
group and divides by the world size: every parameter ends with the gradient of the global loss.

Checkpoints. With `parallel = "fsdp"` or `ep` > 1 the step checkpoints are sharded: `torch.distributed.
checkpoint` (DCP) writes each rank's shards of the weights and the optimizer state into RUN/checkpoints/
step-N/dcp/ beside rank 0's trainer state, in a temporary sibling renamed into place once every rank is done,
so a kill -9 never leaves half a checkpoint. DCP reshards on load, so a run resumes on any world size
(one process included). `consolidate` turns such a checkpoint into the ordinary single-file one (export,
eval and serve read that), and RUN/final is always written in the ordinary format.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch
import torch.distributed as torch_dist
from torch import nn

from tinyseek.config import CommandParser, ConfigError
from tinyseek.dist import DistInfo
from tinyseek.errors import TinyseekError
from tinyseek.model import Experts, MoE, probe_kernels

DCP_DIR = "dcp"  # inside a sharded step checkpoint
PARALLEL_KINDS = ("ddp", "fsdp")


# ----------------------------------------------------------------------------------------------
# checks made before any work


def check_parallel(parallel: str, ep: int, world: int) -> None:
    """The parallel layout fits this world size (every rank raises the same one-line error)."""
    if parallel not in PARALLEL_KINDS:
        raise ConfigError(f"parallel: must be ddp or fsdp (got {parallel!r})")
    if ep < 1:
        raise ConfigError(f"ep: must be >= 1 (got {ep})")
    if world % ep:
        raise ConfigError(f"ep: {ep} does not divide the number of processes, {world} (torchrun --nproc-per-node)")


def check_experts(model: nn.Module, ep: int) -> None:
    """The model's routed experts split evenly over `ep` ranks."""
    if ep <= 1:
        return
    cfg = getattr(model, "cfg", None)
    if not any(isinstance(m, MoE) for m in model.modules()):
        raise ConfigError(f"ep: {ep} asks for expert parallelism but the model has no MoE layer")
    if cfg.n_routed_experts % ep:
        raise ConfigError(f"ep: n_routed_experts = {cfg.n_routed_experts} is not divisible by the EP size {ep}")
    if cfg.moe_impl == "dense":
        raise ConfigError(
            f"moe_impl: dense runs every expert on every token and cannot be expert-parallel (ep = {ep}); use sorted"
        )


def is_sharded(parallel: str, ep: int) -> bool:
    """Whether step checkpoints go through DCP (sharded) rather than the single-file format."""
    return parallel == "fsdp" or ep > 1


# ----------------------------------------------------------------------------------------------
# expert parallelism


def _ep_mesh(d: DistInfo, ep: int):
    """A 2-D mesh (expert-data-parallel, ep) over all ranks: EP groups are consecutive ranks."""
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(d.device.type, (d.world // ep, ep), mesh_dim_names=("edp", "ep"))


class _LocalExperts:
    """The single-device `Experts` computation (sorted or loop dispatch) on this rank's expert weights."""

    sorted = Experts.sorted
    loop = Experts.loop
    _padded = Experts._padded

    def __init__(self, w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor):
        self.w1, self.w2, self.w3 = w1, w2, w3


class ExpertParallelExperts(nn.Module):
    """Routed experts sharded over an EP group; tokens dispatched and combined with all_to_all.

    Holds w1/w3 [E, F, D] and w2 [E, D, F] as DTensors sharded on dim 0 over the EP mesh (this rank's local
    tensors are experts [r * E/ep, (r+1) * E/ep)), so DCP saves and reshards them like any sharded tensor and
    the state-dict names stay those of `Experts`. Shape suffixes as in model.py: T tokens, K experts per token,
    N = T*K routed rows (sorted by expert), R rows received by this rank, L local experts, P = ep ranks.
    """

    def __init__(self, experts: Experts, mesh):
        from torch.distributed.tensor import DTensor, Shard

        super().__init__()
        self.mesh = mesh
        self.P = mesh.size()
        E = experts.w1.shape[0]
        self.L = E // self.P
        r = mesh.get_local_rank()
        for name in ("w1", "w2", "w3"):
            full = getattr(experts, name).detach()
            local = full[r * self.L : (r + 1) * self.L].clone()
            self.register_parameter(name, nn.Parameter(DTensor.from_local(local, mesh, [Shard(0)], run_check=False)))

    def _local(self, dtype: torch.dtype) -> _LocalExperts:
        """This rank's weights in the activations' dtype: under FSDP2's bf16 policy the rest of the block computes in
        bf16 while these float32 parameters stay outside FSDP2 (a no-op in float32, and under autocast)."""
        return _LocalExperts(*(getattr(self, n).to_local().to(dtype) for n in ("w1", "w2", "w3")))

    def sorted(self, x_TD, weights_TK, experts_TK, counts_E) -> torch.Tensor:
        return self._dispatch(x_TD, weights_TK, experts_TK, counts_E, "sorted")

    def dense(self, x_TD, weights_TK, experts_TK) -> torch.Tensor:
        """What `MoE` calls for a few rows per expert: under EP the sorted dispatch, so that every rank makes the
        same all_to_all whichever branch its own token count chose (see the module docstring)."""
        return self._dispatch(x_TD, weights_TK, experts_TK, self._counts(experts_TK), "sorted")

    def loop(self, x_TD, weights_TK, experts_TK) -> torch.Tensor:
        return self._dispatch(x_TD, weights_TK, experts_TK, self._counts(experts_TK), "loop")

    def _counts(self, experts_TK) -> torch.Tensor:
        return torch.bincount(experts_TK.reshape(-1), minlength=self.L * self.P)

    def _dispatch(self, x_TD, weights_TK, experts_TK, counts_E, impl: str) -> torch.Tensor:
        from torch.distributed._functional_collectives import all_to_all_single_autograd

        group = self.mesh.get_group()
        T, K = experts_TK.shape
        D = x_TD.shape[1]
        P, L = self.P, self.L
        flat_N = experts_TK.reshape(-1)
        order_N = flat_N.argsort(stable=True)  # sorted row -> flat (t, k): rows grouped by expert, so by rank
        x_ND = x_TD.index_select(0, order_N // K)
        with torch.no_grad():
            counts_PL = counts_E.reshape(P, L).contiguous()
            recv_PL = torch.empty_like(counts_PL)  # [source rank, local expert]: rows coming to this rank
            torch_dist.all_to_all_single(recv_PL, counts_PL, group=group)
            send = counts_PL.sum(1).tolist()  # the one host sync: all_to_all needs the split sizes
            recv = recv_PL.sum(1).tolist()
        x_RD = all_to_all_single_autograd(x_ND, recv, send, group)
        # received rows come source by source, each source's rows sorted by expert: the local expert of each row
        local_R = torch.arange(L, device=x_TD.device).repeat(P).repeat_interleave(recv_PL.reshape(-1))
        ones_R1 = torch.ones(x_RD.shape[0], 1, dtype=torch.float32, device=x_TD.device)
        experts = self._local(x_RD.dtype)
        if impl == "sorted":
            y_RD = experts.sorted(x_RD, ones_R1, local_R.unsqueeze(1), recv_PL.sum(0))
        else:
            y_RD = experts.loop(x_RD, ones_R1, local_R.unsqueeze(1))
        y_ND = all_to_all_single_autograd(y_RD, send, recv, group)
        inv_N = torch.empty_like(order_N)
        inv_N[order_N] = torch.arange(order_N.numel(), device=order_N.device)
        y_TKD = y_ND.index_select(0, inv_N).view(T, K, D)
        return torch.bmm(weights_TK.to(y_TKD.dtype).unsqueeze(1), y_TKD).squeeze(1)


def apply_expert_parallel(model: nn.Module, d: DistInfo, ep: int):
    """Replace every MoE block's routed experts by their EP shard (in place). Returns the mesh."""
    check_experts(model, ep)
    mesh = _ep_mesh(d, ep)
    for m in model.modules():
        if isinstance(m, MoE):
            m.experts = ExpertParallelExperts(m.experts, mesh["ep"])
    model._ep_mesh = mesh  # for finish_gradients (not a parameter or buffer: not in the state dict)
    return mesh


def _ep_params(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [
        (f"{name}.{p}", getattr(m, p))
        for name, m in model.named_modules()
        if isinstance(m, ExpertParallelExperts)
        for p in ("w1", "w2", "w3")
    ]


# ----------------------------------------------------------------------------------------------
# the wrapper


class _Opaque:
    """A box FSDP2 does not look into (it is not a list, dict, tuple or dataclass)."""

    def __init__(self, value):
        self.value = value


def _pass_state_through(block: nn.Module) -> None:
    """Hide a block's per-forward state (model._Step) from FSDP2's pre-forward hook.

    FSDP2 walks a module's inputs (into dataclasses and lists) for tensors that need a gradient and rebuilds the
    containers around them. `_Step.auxes` holds the earlier blocks' balance losses, so the block would get a
    rebuilt copy of the list and its own loss would be appended to that copy and lost. A hook that runs before
    FSDP2's boxes the state, one that runs after unboxes it: the block sees the very object the model passed."""

    def box(module, args):
        return (args[0], _Opaque(args[1]), *args[2:]) if len(args) > 1 else None

    def unbox(module, args):
        return (args[0], args[1].value, *args[2:]) if len(args) > 1 and isinstance(args[1], _Opaque) else None

    block.register_forward_pre_hook(box, prepend=True)  # before FSDP2's own (prepended by fully_shard)
    block.register_forward_pre_hook(unbox)  # after it


def apply_fsdp(model: nn.Module, d: DistInfo, bf16: bool) -> nn.Module:
    """FSDP2: `fully_shard` every transformer block (the MTP modules' too), then the root (the rest)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(d.device.type, (d.world,))
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
    # EP experts are already sharded (over the EP mesh) and their gradients summed by finish_gradients: FSDP2
    # leaves them alone, as DDP does
    kw = {"mesh": mesh, "ignored_params": {p for _, p in _ep_params(model)}, **({"mp_policy": mp} if mp else {})}
    # the MTP modules' own norms and projection are used around their block (model._mtp_train): they stay with the root
    blocks = list(getattr(model, "layers", [])) + [m.block for m in getattr(model, "mtp", [])]
    if not blocks:
        raise ConfigError("parallel: fsdp is built for tinyseek models (per-block sharding); use parallel = ddp")
    for block in blocks:
        fully_shard(block, **kw)
        _pass_state_through(block)
    fully_shard(model, **kw)
    return model


def wrap_model(model: nn.Module, parallel: str, ep: int, bf16: bool, compile_: bool, d: DistInfo) -> nn.Module:
    """The one place parallelism and compilation are applied to the single-device model (see the module
    docstring). `model` is changed in place where the method works that way (EP, FSDP2); the returned module
    is what the loop calls forward on."""
    check_parallel(parallel, ep, d.world)
    if ep > 1:
        apply_expert_parallel(model, d, ep)
    if d.enabled:
        if parallel == "fsdp":
            model = apply_fsdp(model, d, bf16)
        else:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ep_names = [name for name, _ in _ep_params(model)]
            if ep_names:  # sharded over the EP group, not replicated: summed by finish_gradients instead
                DDP._set_params_and_buffers_to_ignore_for_model(model, ep_names)
            # buffers (the MoE balancing biases) move identically on every rank: nothing to sync at each forward
            import inspect

            newer = "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters  # torch >= 2.13's name
            no_buffer_sync = {"forward_sync_buffers": False} if newer else {"broadcast_buffers": False}
            model = DDP(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None, **no_buffer_sync)
    if compile_:
        probe_kernels(model)  # before tracing: a probe inside the trace would split the forward
        model = torch.compile(model)
    return model


def unwrapped(module: nn.Module) -> nn.Module:
    """The model under torch.compile and DDP (FSDP2 and EP work in place: nothing to strip)."""
    m = getattr(module, "_orig_mod", module)
    return m.module if isinstance(m, nn.parallel.DistributedDataParallel) else m


def no_sync(module: nn.Module, skip: bool):
    """Gradient accumulation: skip the gradient reduction of this backward (DDP's no_sync, FSDP2's
    set_requires_gradient_sync) when `skip`; a no-op context otherwise."""
    if not skip:
        return contextlib.nullcontext()
    m = getattr(module, "_orig_mod", module)
    if isinstance(m, nn.parallel.DistributedDataParallel):
        return m.no_sync()
    if hasattr(m, "set_requires_gradient_sync"):

        @contextlib.contextmanager
        def fsdp_no_sync():
            m.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                m.set_requires_gradient_sync(True)

        return fsdp_no_sync()
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------
# gradients


def finish_gradients(model: nn.Module, d: DistInfo) -> None:
    """EP experts: sum the gradient over the ranks that hold the same experts, then divide by the world size
    (see the module docstring); nothing to do without EP."""
    mesh = getattr(model, "_ep_mesh", None)
    if mesh is None:
        return
    group = mesh["edp"].get_group() if mesh["edp"].size() > 1 else None
    for _, p in _ep_params(model):
        if p.grad is None:
            continue
        g = p.grad.to_local()
        if group is not None:
            torch_dist.all_reduce(g, group=group)
        g.div_(d.world)


def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> float:
    """Clip the gradients to a total 2-norm of `max_norm` (inf: measure only); returns the norm before clipping.

    Plain tensors, or DTensors on one mesh (FSDP2), go through torch's `clip_grad_norm_`; a mix (EP experts next to
    replicated or FSDP2-sharded parameters) adds each sharded gradient's local square sum over its mesh's process
    group."""
    from torch.distributed.tensor import DTensor

    grads = [p.grad for p in params if p.grad is not None]
    meshes = {g.device_mesh if isinstance(g, DTensor) else None for g in grads}
    if len(meshes) <= 1:
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        return float(norm)
    plain = torch.zeros((), dtype=torch.float32, device=grads[0].device)
    sharded: dict = {}  # process group -> local square sum (dict order: the same on every rank)
    for g in grads:
        if isinstance(g, DTensor):
            key = g.device_mesh
            sq = g.to_local().float().pow(2).sum()
            sharded[key] = sharded.get(key, 0) + sq
        else:
            plain = plain + g.float().pow(2).sum()
    total = plain
    for mesh, sq in sharded.items():
        torch_dist.all_reduce(sq, group=mesh.get_group())
        total = total + sq
    norm = total.sqrt()
    coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for g in grads:
        (g.to_local() if isinstance(g, DTensor) else g).mul_(coef.to(g.dtype))
    return float(norm)


# ----------------------------------------------------------------------------------------------
# state dicts and checkpoints


def has_dtensors(model: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The ordinary (unsharded, single-device) state dict of a model FSDP2 or EP has sharded, on every rank
    (a collective: every rank calls it); a plain model's own state dict otherwise."""
    model = unwrapped(model)
    if not has_dtensors(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))


class Consolidated:
    """What a checkpoint writer asks of a model (`cfg`, `state_dict()`), for weights gathered from their shards."""

    def __init__(self, cfg, state_dict: dict[str, torch.Tensor]):
        self.cfg, self._sd = cfg, state_dict

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._sd


@contextlib.contextmanager
def _single_process_ok():
    """DCP warns each time it runs without a process group; one process is a supported case here (resume, convert)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def save_sharded(model: nn.Module, optimizer, out: Path) -> None:
    """Every rank writes its shards of the weights and the optimizer state into `out` (DCP; collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(unwrapped(model), optimizer)
    with _single_process_ok():
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(out), no_dist=not torch_dist.is_initialized())


def load_sharded(model: nn.Module, optimizer, path: Path) -> None:
    """Load a DCP checkpoint written by `save_sharded` on any world size into this rank's shards (collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    m = unwrapped(model)
    msd, osd = get_state_dict(m, optimizer)
    try:
        with _single_process_ok():
            dcp.load({"model": msd, "optim": osd}, checkpoint_id=str(path), no_dist=not torch_dist.is_initialized())
    except Exception as e:  # DCP raises its own types (CheckpointException) with a traceback per rank
        raise TinyseekError(f"{path}: cannot load the sharded checkpoint ({str(e).splitlines()[0][:300]})") from None
    set_state_dict(m, optimizer, model_state_dict=msd, optim_state_dict=osd)


def consolidate(step_dir: str | Path, out: str | Path) -> Path:
    """A sharded step checkpoint (RUN/checkpoints/step-N with dcp/) as an ordinary checkpoint directory: the
    weights gathered into one model.safetensors beside config.json and tokenizer.json. One process; no GPU."""
    import torch.distributed.checkpoint as dcp

    from tinyseek.checkpoint import read_config, write_weights
    from tinyseek.io import atomic_dir
    from tinyseek.model import Transformer
    from tinyseek.tokenizer import TOKENIZER_FILE

    step_dir = Path(step_dir)
    src = step_dir / DCP_DIR
    if not src.is_dir():
        raise TinyseekError(f"{step_dir}: not a sharded checkpoint (no {DCP_DIR}/ directory)")
    cfg = read_config(step_dir)
    with torch.device("meta"):
        meta = Transformer(cfg)
    sd = {k: torch.empty(v.shape, dtype=v.dtype) for k, v in meta.state_dict().items()}
    try:
        with _single_process_ok():
            dcp.load({"model": sd}, checkpoint_id=str(src), no_dist=True)
    except Exception as e:
        raise TinyseekError(f"{src}: cannot read the sharded checkpoint ({str(e).splitlines()[0][:300]})") from None
    tok = step_dir / TOKENIZER_FILE
    with atomic_dir(Path(out)) as tmp:
        write_weights(tmp, cfg, sd, tok if tok.is_file() else None)
    return Path(out)


def cli_consolidate(argv: list[str]) -> int:

    ap = CommandParser(
        prog="tinyseek consolidate",
        description="Turn a sharded (FSDP2 / expert-parallel) step checkpoint into an ordinary checkpoint.",
    )
    ap.add_argument("ckpt", help="a sharded step checkpoint: RUN/checkpoints/step-N (holding dcp/)")
    ap.add_argument("--out", required=True, help="the ordinary checkpoint directory to write")
    a = ap.parse_args(argv)
    out = consolidate(a.ckpt, a.out)
    print(f"consolidated {a.ckpt} -> {out}")
    return 0
