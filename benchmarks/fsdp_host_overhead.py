"""Host cost of the optimizer step and gradient clipping over FSDP2 (DTensor) parameters against plain
ones (issue 20): at a tiny width the compute is negligible and what remains is dispatch per tensor.

    torchrun --standalone --nproc_per_node 2 benchmarks/fsdp_host_overhead.py 64 12    # 2 CPU processes
"""

import sys
import time

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from core.blocks import Transformer

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
d, layers = int(sys.argv[1]), int(sys.argv[2])


def timed(model, clip, **optimizer_options) -> dict:
    """Median ms of gradient clipping and of one AdamW step, over 6 repeats."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, **optimizer_options)
    model(torch.randn(2, 16, d)).pow(2).mean().backward()
    times = {"clip": [], "step": []}
    for _ in range(6):
        for name, work in (("clip", lambda: clip(model.parameters(), 1.0)), ("step", optimizer.step)):
            dist.barrier()  # both ranks start together: the clip's all-reduce waits for the slower one
            started = time.perf_counter()
            work()
            times[name].append(time.perf_counter() - started)
    return {k: sorted(v)[len(v) // 2] * 1000 for k, v in times.items()}


plain = Transformer(d, layers, 8)
n = sum(p.numel() for p in plain.parameters())
sharded = Transformer(d, layers, 8)
mesh = init_device_mesh("cpu", (2,))
for block in sharded.blocks:
    fully_shard(block, mesh=mesh)
fully_shard(sharded, mesh=mesh)
a = timed(plain, torch.nn.utils.clip_grad_norm_)
b = timed(sharded, torch.nn.utils.clip_grad_norm_)
c = timed(sharded, torch.nn.utils.clip_grad_norm_, fused=True)
if rank == 0:
    print(f"params {n:,} in {len(list(plain.parameters()))} tensors")
    print(f"plain (whole model on one rank): clip {a['clip']:.1f} ms, AdamW step {a['step']:.1f} ms")
    print(f"FSDP2 (half per rank, DTensor):  clip {b['clip']:.1f} ms, AdamW step {b['step']:.1f} ms")
    print(f"FSDP2, fused AdamW:              clip {c['clip']:.1f} ms, AdamW step {c['step']:.1f} ms")
dist.barrier()  # leave together: a rank tearing Gloo down while its peer still works can abort
dist.destroy_process_group()
