"""Run with torchrun (2 processes, gloo) by tests/test_distributed.py: DPGD with the seed scan and the PGD split
across ranks (engine/distributed.py AnchorComm) against build_anchors in one process, with the same teacher.
Rank 0 writes {"equal": {...}} to the JSON file given as argv[1]."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F

from segpcl.engine import distributed
from segpcl.method.anchors import build_anchors


def main(out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    torch.manual_seed(0)  # the same teacher, images, text and prototypes on every rank
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.Flatten())
    proj = torch.nn.Linear(8 * 7 * 7, 16)

    def encode(x):
        raw = net(x)
        return F.normalize(proj(raw), dim=-1), raw

    images = torch.rand(37, 3, 16, 16)
    text = F.normalize(torch.randn(9, 16), dim=-1)  # 6 old classes, 3 new
    protos = F.normalize(torch.randn(6, 8 * 7 * 7), dim=-1)
    kw = dict(k_seed=3, steps=4, eps=8 / 255, gamma=1.5e-3, lambda_p=1.0, batch_size=4)

    def batches(x, size=5):
        return (x[i : i + size] for i in range(0, len(x), size))

    comm = distributed.AnchorComm()
    rank, world = dist.get_rank(), dist.get_world_size()
    comm.shard_indices = list(range(rank, len(images), world))  # what ShardedLoaders.shard_batches records
    split = build_anchors(encode, batches(images[rank::world]), text, 6, protos, 10.0, comm=comm, **kw)
    if rank == 0:
        one = build_anchors(encode, batches(images), text, 6, protos, 10.0, **kw)
        keys = ("images", "targets", "seed_indices", "teacher_logits", "teacher_features")
        equal = {k: bool(torch.equal(getattr(one, k), getattr(split, k))) for k in keys}
        equal["stats"] = one.stats == split.stats
        with open(out, "w") as f:
            json.dump({"equal": equal, "anchors": len(one), "chunks": -(-len(one) // kw["batch_size"])}, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
