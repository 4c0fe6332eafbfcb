"""Data-parallel training under torchrun (torch.distributed; gloo on CPU, NCCL on CUDA).

`torchrun --nproc-per-node N -m segpcl train ...` (or `segpcl train --nproc N`) runs the same task loop in N
processes. What is sharded and what is identical on every rank:

- training: each rank trains on 1/N of every global batch (`train.batch_size` split across ranks; the global
  batches are the ones a single process draws, see `ShardedShuffleSampler`); the LoRA gradients are averaged
  with one `all_reduce` per step, so every rank applies the same update and holds the same weights;
- DPGD: each rank scans its shard of the task images for seeds; the candidates (score inputs, dataset index,
  image) are gathered and the per-class top-k is taken over them, so every rank selects the seeds one process
  would; the PGD chunks are split across ranks and gathered, the teacher outputs on the anchors are computed on
  every rank from the same anchor images (cheap), so every rank holds the identical anchor set;
- TSGR and the prototype transfer: computed identically on every rank (same inputs, cheap);
- new prototypes: each rank sums the features of its shard, the per-class sums and counts are gathered and added
  in rank order (`PrototypeBank.add_sums`), identical on every rank;
- evaluation: each rank evaluates its shard, correct/total counts are all-reduced;
- only rank 0 writes the run directory (lock, config, checkpoints, metrics, plots, logs); the others read the
  checkpoint rank 0 chose on --resume.

Gradients are averaged by `all_reduce` after backward rather than by wrapping the model in
DistributedDataParallel: the learner calls the image and text towers of the peft model directly (anchors are
concatenated to the batch, the text tower runs on its own), not through one `forward`, which is what DDP's
hooks attach to; one flat all_reduce of the LoRA gradients is what DDP does (bucketed) for this model.

A failure on one rank ends the others: torchrun tears the group down when a worker exits non-zero, and every
collective has a bounded timeout (`SEGPCL_DIST_TIMEOUT` seconds, default 300) for launchers that do not.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, RandomSampler, Sampler

from ..errors import ConfigError

TIMEOUT_ENV = "SEGPCL_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 300


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def env_rank() -> int:
    """This process's rank as torchrun set it (0 without torchrun)."""
    return int(os.environ.get("RANK", "0") or 0)


def active() -> bool:
    """Whether this process is one of several ranks of an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def timeout_seconds() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise ConfigError(f"{TIMEOUT_ENV} must be > 0 seconds, got {raw}")
    return value


def init_from_env(device_name: str = "auto") -> bool:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1); True if this process is
    one of several ranks. NCCL when the run's device is CUDA, gloo otherwise."""
    if active():
        return True
    if env_world_size() <= 1:
        return False
    cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds()))
    return active()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """cuda:LOCAL_RANK for a CUDA run with several ranks; the device itself otherwise."""
    if active() and device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def per_rank_batch(batch_size: int, n: int | None = None) -> int:
    """Each of the `n` processes' share of the global batch (default: this process group's size); a batch that
    does not divide is a ConfigError, raised before anything loads (engine/entry.py, the --nproc launcher)."""
    n = world() if n is None else n
    if batch_size % n:
        raise ConfigError(
            f"train.batch_size={batch_size} is the global batch and must be divisible by the {n} processes "
            f"(--set train.batch_size={batch_size - batch_size % n or n})"
        )
    return batch_size // n


class ShardedShuffleSampler(DistributedSampler):
    """This rank's share of the permutation a single process's shuffled DataLoader draws.

    `generator` is the DataLoader's own generator and the permutation is RandomSampler's own, so the draws
    from it are exactly those of a single process's loader, epoch after epoch. Rank r takes positions r,
    r + N, ... of the (padded, as DistributedSampler pads) permutation; with a per-rank batch of B / N,
    global batch j of the N ranks together holds exactly the images of batch j of one process with batch B
    (when N divides the task's size; otherwise a few images are repeated, as DistributedSampler does)."""

    def __init__(self, dataset, generator: torch.Generator | None = None):
        super().__init__(dataset, num_replicas=world(), rank=rank(), shuffle=True, drop_last=False)
        self.generator = generator

    def __iter__(self):
        perm = list(RandomSampler(self.dataset, generator=self.generator))  # its draws, whatever the version
        pad = self.total_size - len(perm)
        if pad > 0:
            perm += (perm * (pad // len(perm) + 1))[:pad]
        yield from perm[self.rank : self.total_size : self.num_replicas]


class StridedSampler(Sampler):
    """Dataset indices rank, rank + N, ... in order, without padding (counts are summed across ranks)."""

    def __init__(self, n: int):
        self.indices = list(range(rank(), n, world()))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def all_reduce_ints(*lists: list[int]) -> list[list[int]]:
    """Element-wise sums across ranks of integer lists (one collective)."""
    sizes = [len(v) for v in lists]
    flat = torch.tensor([x for v in lists for x in v], dtype=torch.int64)
    if active():
        flat = _on_backend_device(flat)
        dist.all_reduce(flat)
        flat = flat.cpu()
    out, start = [], 0
    for n in sizes:
        out.append(flat[start : start + n].tolist())
        start += n
    return out


def _on_backend_device(t: torch.Tensor) -> torch.Tensor:
    if dist.get_backend() == "nccl":
        return t.to(torch.device("cuda", torch.cuda.current_device()))
    return t


def average_gradients(params: list[torch.Tensor]) -> None:
    """Average the gradients of `params` across ranks in place (one flat all_reduce; a missing gradient
    counts as zero)."""
    if not active():
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    dist.all_reduce(flat)
    flat /= world()
    start = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[start : start + n].view_as(g).to(g.dtype)
        start += n


def all_gather_objects(obj) -> list:
    """Every rank's `obj` in rank order (tensors in it must be on the CPU)."""
    if not active():
        return [obj]
    out = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if active():
        dist.barrier()


class AnchorComm:
    """What DPGD (method/anchors.py) and the prototypes (method/learner.py) need from the process group; the
    method code never imports torch.distributed. `shard_indices` is filled by the engine's shard batches with
    the dataset index of every image it yields, in order."""

    def __init__(self):
        self.shard_indices: list[int] = []

    @property
    def world(self) -> int:
        return world()

    @property
    def rank(self) -> int:
        return rank()

    def gather(self, obj) -> list:
        return all_gather_objects(obj)

    def merge_candidates(self, x, idx, feats, device):
        """All ranks' seed candidates (images, dataset indices, features), in dataset-index order."""
        local = None if x is None else (x.cpu(), idx.cpu(), feats.cpu())
        parts = [p for p in self.gather(local) if p is not None and len(p[1])]
        if not parts:
            raise ValueError("no images to build anchors from")
        xs, ids, fs = (torch.cat([p[i] for p in parts]) for i in range(3))
        order = torch.sort(ids, stable=True).indices
        return xs[order].to(device), ids[order].to(device), fs[order].to(device)

    def global_indices(self, local: torch.Tensor) -> torch.Tensor:
        table = torch.tensor(self.shard_indices, dtype=torch.int64, device=local.device)
        return table[local]

    def gather_chunks(self, mine: dict[int, torch.Tensor], n_chunks: int, device) -> list[torch.Tensor]:
        """Chunk i (computed by rank i % N) from every rank, in chunk order."""
        merged: dict[int, torch.Tensor] = {}
        for part in self.gather({i: t.cpu() for i, t in mine.items()}):
            merged.update(part)
        return [merged[i].to(device) for i in range(n_chunks)]


DEBUG_ANCHORS_ENV = "SEGPCL_DEBUG_ANCHORS"


def dump_anchors(anchors, task: int) -> None:
    """With SEGPCL_DEBUG_ANCHORS=DIR, rank 0 saves task `task`'s anchor set to DIR/anchors_XX.pt (for the
    tests that compare one process with several)."""
    folder = os.environ.get(DEBUG_ANCHORS_ENV)
    if not folder or anchors is None or env_rank() != 0:
        return
    os.makedirs(folder, exist_ok=True)
    keys = ("images", "targets", "teacher_logits", "teacher_features", "seed_indices")
    torch.save({k: getattr(anchors, k).detach().cpu() for k in keys}, os.path.join(folder, f"anchors_{task:02d}.pt"))


def launch(nproc: int, argv: list[str]) -> int:
    """`segpcl train --nproc N ...`: torchrun's own launcher for one node, running `python -m segpcl` with
    `argv` in N processes. Returns the exit status."""
    from torch.distributed import run as torchrun

    args = torchrun.get_args_parser().parse_args(
        ["--nproc-per-node", str(nproc), "--standalone", "--module", "segpcl", *argv]
    )
    try:
        torchrun.run(args)
    except Exception as exc:  # ChildFailedError: torchrun has printed which rank failed and why
        print(f"error: a training process failed ({type(exc).__name__}); see the messages above", file=sys.stderr)
        return 1
    return 0


def reduce_task_info(info: dict) -> dict:
    """A task's training numbers over all ranks: `skipped_images` summed, the `mean_*` losses (and the gradient
    norm) and `clipped_share` averaged over the ranks that have them (every rank takes the same steps, so that
    is the mean over the global batches; the norm is taken after the gradients are averaged, so it is the same
    on every rank)."""
    averaged = ("clipped_share",)
    mine = {k: float(v) for k, v in info.items() if k.startswith("mean_") or k in ("skipped_images", *averaged)}
    parts = all_gather_objects(mine)
    out: dict = {"skipped_images": int(sum(p.get("skipped_images", 0) for p in parts))}
    for key in sorted({k for p in parts for k in p} - {"skipped_images"}):
        values = [p[key] for p in parts if key in p]
        out[key] = sum(values) / len(values)
    return out
