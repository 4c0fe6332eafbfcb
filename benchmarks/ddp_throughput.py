"""Training throughput (samples/s) of the trainer's SeGP-CL step at 1 and N data-parallel processes.

    python benchmarks/ddp_throughput.py [--nproc 1,2] [--model tiny] [--device cpu] [--batch 32] [--steps 30]
                                        [--threads 1] [--json FILE]

For each N it starts `torchrun --nproc-per-node N --standalone` on this script (N = 1: one plain process, the
single-process code path). Every rank builds the same model (LoRA on both towers) and a SeGP-CL learner at a
task t >= 2 (C = 20 classes, 10 old, DPGD anchors from synthetic images), then times `--steps` training steps of
the trainer (Learner.training_loss + engine.trainer.optimizer_step, which averages the LoRA gradients across
ranks) on its B / N share of a global batch B, after 3 warm-up steps. samples/s = B x steps / rank 0's wall
time. On CPU the ranks share the cores: `--threads` torch threads per process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def worker(args) -> None:
    import torch

    from segpcl.config import LoraSection, MethodSection, RunConfig, TrainSection
    from segpcl.engine import distributed
    from segpcl.engine.trainer import make_optimizer, optimizer_step
    from segpcl.method.learner import Learner
    from segpcl.models.loading import load_clip
    from segpcl.models.lora import apply_lora, lora_parameters

    torch.set_num_threads(args.threads)
    distributed.init_from_env(args.device)
    device = distributed.local_device(torch.device(args.device))
    n, rank = distributed.world(), distributed.rank()
    b = distributed.per_rank_batch(args.batch)
    torch.manual_seed(0)
    model = load_clip(args.model, None, device=device)
    model.eval()
    apply_lora(model, LoraSection(towers=["visual", "text"]))
    model.to(device)
    C, old = 20, 10
    learner = Learner(
        model,
        [f"synthetic class {i}" for i in range(C)],
        ["a photo of a {}."],
        [old, C - old],
        MethodSection(name="segpcl"),
        text_has_lora=True,
        device=device,
    )
    gen = torch.Generator().manual_seed(0)
    learner.prototypes.add(torch.randn(C, learner.prototypes.bank.dim, generator=gen), torch.arange(C))
    H = model.image_size
    pool = torch.rand(64, 3, H, H, generator=gen).to(device)
    labels_pool = (old + torch.arange(64) % (C - old)).to(device)
    learner.before_task(1, lambda: iter([(pool, labels_pool)]))
    images = torch.rand(args.batch, 3, H, H, generator=gen)[rank * b : (rank + 1) * b].to(device)
    labels = (old + torch.randint(0, C - old, (args.batch,), generator=gen))[rank * b : (rank + 1) * b].to(device)
    params = lora_parameters(model)
    opt = make_optimizer(params, RunConfig(train=TrainSection()))
    model.train()

    def step() -> None:
        loss, _ = learner.training_loss(images, labels)
        loss.item()
        optimizer_step(loss, opt, params, 1.0)

    for _ in range(3):
        step()
    distributed.barrier()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    distributed.barrier()
    seconds = time.perf_counter() - t0
    if rank == 0:
        result = {
            "nproc": n,
            "global_batch": args.batch,
            "per_rank_batch": b,
            "steps": args.steps,
            "seconds": seconds,
            "samples_per_s": args.batch * args.steps / seconds,
            "model": args.model,
            "device": str(device),
            "threads_per_process": args.threads,
            "ddp_path_active": distributed.active(),
        }
        with open(args.out, "w") as f:
            json.dump(result, f)
    distributed.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nproc", default="1,2")
    p.add_argument("--model", default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    results = []
    common = ["--model", args.model, "--device", args.device, "--batch", str(args.batch)]
    common += ["--steps", str(args.steps), "--threads", str(args.threads)]
    for n in [int(x) for x in args.nproc.split(",")]:
        out = f"/tmp/segpcl_ddp_throughput_{os.getpid()}_{n}.json"
        me = [os.path.abspath(__file__), "--worker", "--out", out, *common]
        if n == 1:
            cmd = [sys.executable, *me]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n), "--standalone", *me]
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        env["OMP_NUM_THREADS"] = str(args.threads)
        subprocess.run(cmd, check=True, env=env)
        with open(out) as f:
            results.append(json.load(f))
        os.unlink(out)
        r = results[-1]
        print(f"nproc {n}: {r['samples_per_s']:.1f} samples/s (global batch {args.batch}, {r['seconds']:.2f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
