"""The pre-clip gradient norm of SeGP-CL's training step (CE + ACGD + TSGR) under the ViT-B/16 revision preset,
on random weights and random 224 px images, against the preset's train.grad_clip (measure, not shipped).

The model, LoRA and method settings are the preset's (`--bench cifar100 --preset revision`), built through the
library as a run builds them; what differs is stated in the output: random weights (no download here), random
images, `object N` class names, and k_seed / pgd_steps lowered so that DPGD fits on a CPU (they change where the
anchors sit, not the terms of the loss). Task 1 trains `--steps` steps (CE + TSGR), then task 2's anchors are
built and `--steps` steps train with CE + ACGD + TSGR. `--logit-scale 100` sets OpenAI CLIP's trained scale
(random init has 1/0.07 = 14.3; the scale multiplies the CE and ACGD logits, so their gradients grow with it).

    python benchmarks/grad_norm_step.py --batch 8 --steps 3 [--logit-scale 100]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from types import SimpleNamespace

import torch

from segpcl.config import resolve_config
from segpcl.engine.build import build_method, build_model
from segpcl.engine.loop import make_optimizer, optimizer_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--k-seed", type=int, default=1)
    ap.add_argument("--pgd-steps", type=int, default=1)
    ap.add_argument("--logit-scale", type=float, default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = resolve_config(
        "cifar100",
        preset="revision",
        overrides={
            "model": {"pretrained": None, "precision": "fp32"},
            "train": {"device": "cpu", "batch_size": args.batch},
            "method": {"k_seed": args.k_seed, "pgd_steps": args.pgd_steps},
        },
    )
    model = build_model(cfg, torch.device("cpu"))
    if args.logit_scale is not None:
        with torch.no_grad():
            model.base.logit_scale.fill_(math.log(args.logit_scale))
    names = [f"object {i}" for i in range(100)]
    stream = SimpleNamespace(
        class_names=names, bench=SimpleNamespace(templates=["a good photo of a {}."]), task_sizes=[10] * 10
    )
    method = build_method(cfg, model, stream, torch.device("cpu"), contextlib.nullcontext)
    params = method.trainable_parameters()
    print(
        f"ViT-B/16 revision preset, random weights, logit scale {float(model.logit_scale()):.1f}, batch {args.batch}, "
        f"lr {cfg.train.lr}, grad_clip {cfg.train.grad_clip}, {sum(p.numel() for p in params):,} trainable"
    )
    for t in range(2):
        images = torch.rand(args.batch, 3, 224, 224)
        labels = torch.randint(10 * t, 10 * t + 10, (args.batch,))
        batches = [(images, labels)]
        info = method.before_task(t, batches)
        opt = make_optimizer(params, cfg)
        method.model.train()
        for step in range(args.steps):
            start = time.perf_counter()
            loss, parts = method.training_loss(images, labels)
            norm = float(optimizer_step(loss, opt, params, cfg.train.grad_clip))
            loss = loss.detach()
            shown = ", ".join(f"{k} {float(v):.4g}" for k, v in parts.items())
            print(
                f"task {t + 1} step {step + 1}: pre-clip grad norm {norm:.4g} "
                f"({'clipped' if norm > cfg.train.grad_clip else 'not clipped'}); loss {float(loss):.4g} ({shown}); "
                f"anchors {info.get('anchors', 0)}; {time.perf_counter() - start:.1f} s"
            )
        method.model.eval()
        method.after_task(t, batches)


if __name__ == "__main__":
    main()
