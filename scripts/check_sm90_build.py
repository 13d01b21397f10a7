"""Compile the fast engine's Triton decode attention kernels (single-pass and split-KV with the fused
RoPE + cache write, the split combine), the add + RMSNorm kernel and KahanAdamW's update for sm_90 (H100/H200) on a
machine without a GPU, and report what ptxas made of them: shared memory, registers, spills, and
whether the PTX uses wgmma. Exits 1 on a spill or a ptxas error. The launch shapes are the
engine's defaults (`fast_kernels.ATTENTION_TILING`) at the model shapes of the benchmarks.

    pip install triton && python scripts/check_sm90_build.py [--shapes 0.5b,1.5b]

The CPU interpreter (TRITON_INTERPRET=1) checks what these kernels compute; this checks that they
build for the GPU and how heavy they are, before a GPU is at hand.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHAPES  # noqa: E402
from rlvr.kernels import triton_kahan_adamw as KA  # noqa: E402
from rlvr.rollout import fast_kernels as K  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
POINTERS = {"part_m_ptr": "*fp32", "part_l_ptr": "*fp32", "part_acc_ptr": "*fp32", "start_ptr": "*i64",
            "col_ptr": "*i64", "m_ptr": "*fp32", "v_ptr": "*fp32"}
INTS = {"scale": "fp32", "eps": "fp32", **{name: "fp32" for name in ("one_minus_beta1", "beta2", "one_minus_beta2",
                                                                       "neg_step_size", "root_correction", "decay",
                                                                       "decay_minus_one")}}


def signature(fn, constants: dict) -> dict:
    """Argument types as a launch would specialise them: bf16 pointers unless named otherwise, i32 ints."""
    sig = {}
    for name in fn.arg_names:
        if name in constants:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = POINTERS.get(name, "*bf16")
        else:
            sig[name] = INTS.get(name, "i32")
    return sig


def ptxas_report(ptx: str) -> str:
    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(ptx)
    try:
        result = subprocess.run([str(ptxas), "-arch=sm_90a", "-v", f.name, "-o", "/dev/null"], capture_output=True,
                                text=True)
    finally:
        Path(f.name).unlink()
    lines = [line.split(":", 1)[-1].strip() for line in result.stderr.splitlines()
             if "registers" in line or "spill" in line or "rror" in line]
    return " | ".join(lines)


def build(label: str, fn, constants: dict, warps: int, stages: int = 3) -> bool:
    sig = signature(fn, constants)
    # a launch specialises 16-divisible pointers and ints; the caches and sizes here are
    attrs = {(i,): [["tt.divisibility", 16]] for i, t in enumerate(sig.values()) if t != "constexpr"}
    kernel = triton.compile(ASTSource(fn, sig, constants, attrs=attrs), target=TARGET,
                            options=dict(num_warps=warps, num_stages=stages))
    ptx = kernel.asm["ptx"]
    report = ptxas_report(ptx)
    print(f"{label}: smem {kernel.metadata.shared} B, {report}; wgmma {'yes' if 'wgmma' in ptx else 'no'}")
    return re.search(r"(^|\s)0 bytes spill stores, 0 bytes spill loads", report) is not None and "rror" not in report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="0.5b,1.5b")
    args = ap.parse_args()
    print(f"triton {triton.__version__}, target sm_{TARGET.arch}")
    ok = True
    for shape_name in args.shapes.split(","):
        shape = SHAPES[shape_name]
        d = shape["hidden_size"] // shape["num_attention_heads"]
        group = shape["num_attention_heads"] // shape["num_key_value_heads"]
        attention = dict(KV=shape["num_key_value_heads"], GROUP=group, D=d, ROPE=True,
                         BLOCK_G=max(16, triton.next_power_of_2(group)), BLOCK_S=K.ATTENTION_TILING.block_s,
                         PRECISION="tf32")
        warps = K.ATTENTION_TILING.num_warps
        ok &= build(f"{shape_name} attention", K._decode_attention_kernel, attention, warps)
        ok &= build(f"{shape_name} split attention", K._decode_attention_split_kernel, attention, warps)
        ok &= build(f"{shape_name} add + RMSNorm", K._add_rmsnorm_kernel,
                    dict(HAS_DELTA=True, BLOCK=triton.next_power_of_2(shape["hidden_size"])), 4)
    ok &= build("combine splits", K._combine_splits_kernel, dict(BLOCK_SPLITS=8, D=64), 1)
    ok &= build("KahanAdamW update, bf16", KA._kahan_adamw_kernel, dict(HAS_COMP=True, BF16=True, BLOCK=KA.BLOCK), 4)
    print("all built without spills" if ok else "FAILED: a spill or a ptxas error above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
