"""Evaluation on the test images of all seen classes, counted per task."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .loaders import readable


@torch.no_grad()
def evaluate_seen(
    predict,
    loader: DataLoader,
    task_of_class: np.ndarray,
    n_tasks_seen: int,
    device,
    progress: bool = True,
    reduce=None,
) -> tuple[list[int], list[int], int]:
    """(correct per task, total per task, unreadable images skipped) for predictions over seen classes;
    `reduce` sums the counts over processes when the loader is one rank's shard (Loaders.reduce_counts)."""
    correct = np.zeros(n_tasks_seen, dtype=np.int64)
    total = np.zeros(n_tasks_seen, dtype=np.int64)
    skipped = 0
    task_of = torch.from_numpy(task_of_class)
    for images, labels in tqdm(loader, desc="evaluating", leave=False, disable=not progress):
        images, labels, keep = readable(images, labels)
        skipped += int((~keep).sum())
        if not len(labels):
            continue
        images = images.to(device, non_blocking=True)
        pred = predict(images).argmax(dim=1).cpu()
        tasks = task_of[labels]
        total += np.bincount(tasks.numpy(), minlength=n_tasks_seen)[:n_tasks_seen]
        hit = (pred == labels).numpy()
        correct += np.bincount(tasks.numpy()[hit], minlength=n_tasks_seen)[:n_tasks_seen]
    if reduce is not None:
        return reduce(correct.tolist(), total.tolist(), skipped)
    return correct.tolist(), total.tolist(), skipped


def evaluate_stream(predict, loaders, stream, dataset, t: int, device, progress: bool = True):
    """evaluate_seen over `dataset` (a test or validation set of `stream`) with the run's loaders, counted for
    tasks 0..t; under several processes the counts are summed over the ranks."""
    return evaluate_seen(
        predict, loaders.test(dataset), stream.task_of_position(), t + 1, device, progress, loaders.reduce_counts
    )
