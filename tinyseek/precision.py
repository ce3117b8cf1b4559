"""The compute dtype, decided in one place: a training stage's `dtype` and the `--dtype` flag of the inference commands.

Training (`TrainConfig.dtype`): "auto" is bf16 autocast where bf16 is native (a CUDA GPU, a CPU with AVX512_BF16 or
AMX) and float32 elsewhere, because emulated bf16 is far slower than float32 (dev/LOG.md: 0.34x for generation and
~100x slower matmuls on a 2-core EPYC); the master weights stay float32. The loop resolves it once
(`resolve_dtype`) and hands the result to what needs it (its autocast, FSDP2's bf16 parameters). The inference
commands' `--dtype` casts the loaded model (`dtype_arg`). `machine_line` names the hardware the choice was made on.
"""

from __future__ import annotations

from tinyseek.errors import TinyseekError


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else the platform's), e.g. "AMD EPYC 7B13"."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def native_bf16(device="cpu") -> bool:
    """Whether bf16 matmuls run natively on `device`: a CUDA GPU that supports bf16, or a CPU with AVX512_BF16
    or AMX. Elsewhere (AVX2, say) bf16 is emulated and runs far slower than fp32."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_dtype(name: str, device="cpu") -> str:
    """A training stage's `dtype`: "auto" is bfloat16 (autocast) where bf16 is native, float32 elsewhere;
    "float32" and "bfloat16" are taken as they are."""
    if name != "auto":
        return name
    return "bfloat16" if native_bf16(device) else "float32"


def dtype_arg(name: str | None):
    """A `--dtype` flag's value as a torch dtype (None: keep the stored one)."""
    import torch

    table = {
        None: None,
        "fp32": torch.float32,
        "float32": torch.float32,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
    }
    if name not in table:
        raise TinyseekError(f"--dtype: unknown dtype {name!r} (fp32, bf16, fp16)")
    return table[name]


def machine_line(device="cpu") -> str:
    """One line naming the hardware that benchmark figures belong to: CPU model, torch's vector ISA, native bf16,
    threads (and the GPU when `device` is one)."""
    import torch

    line = (
        f"{cpu_name()}, ISA {torch.backends.cpu.get_cpu_capability()} (torch.backends.cpu.get_cpu_capability()), "
        f"native bf16 {'yes' if native_bf16('cpu') else 'no'}, {torch.get_num_threads()} torch threads"
    )
    if torch.device(device).type == "cuda":
        line += f"; GPU {torch.cuda.get_device_name(device)}"
    return line
