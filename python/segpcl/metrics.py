"""Continual-learning metrics, independent of the trainer (Avalanche style: update / result / reset).

acc[t][j] = top-1 accuracy (percent) on the test images of task j's classes after training task t,
predicting among all classes seen so far; seen_accuracy[t] = top-1 accuracy (percent) over all test images of
the classes seen after training task t (called `task_accuracy` in metrics.json files of segpcl <= 0.1, which
load_state and seen_accuracy_of still read). Every accuracy here is in percent (0-100).

Forward transfer: pre_task[t] = accuracy on task t's classes just before learning t (the model after t - 1),
zero_shot[t] = the untrained model's on them, both among the classes seen up to and including t and both
predicted by the CLIP branch (image features against the class text embeddings), for every method: it is the
only branch defined for classes not learned yet (they have no prototype). fwt = mean over t >= 2 of
pre_task[t] - zero_shot[t] (GEM's FWT with the zero-shot model as the baseline; see forward_transfer);
pre_task_accuracy_mean = the same mean without the baseline (continuum's forward_transfer, which drops GEM's
b_i: an accuracy, not a difference).

"CLIP branch only" (the paper's summary, `clip_branch` in metrics.json): the accuracy matrix predicted by the
CLIP branch alone after every task (for methods whose own inference fuses prototypes, one more evaluation pass
per task; for the others it is their own matrix), and from it Last, Avg, forgetting and bwt as above, with fwt
and pre_task_accuracy_mean (the pre-task accuracies are CLIP's already). The paper's CLIP-branch FWT (72.3 on
CIFAR100) has the size of an accuracy: our reading is that it compares with pre_task_accuracy_mean.
"""

from __future__ import annotations

import numpy as np


class AccuracyMatrix:
    def __init__(self, n_tasks: int):
        self.n_tasks = n_tasks
        self.reset()

    def reset(self) -> None:
        self.acc: list[list[float]] = []
        self.seen_accuracy: list[float] = []
        self.zero_shot: list[float] | None = None
        """Zero-shot accuracy on each task's classes (before any training; among the classes seen up to it)."""
        self.pre_task: list[float | None] = [None] * self.n_tasks
        """Accuracy on task t's classes just before learning task t (the model after t - 1); None for t = 0."""
        self.clip_acc: list[list[float]] = []
        """acc[t][j] predicted by the CLIP branch alone (see the module docs)."""
        self.clip_seen_accuracy: list[float] = []

    def set_zero_shot(self, per_task_correct: list[int], per_task_total: list[int]) -> None:
        """Record the untrained model's counts on each task's classes, predicted among the classes seen up to it."""
        self.zero_shot = [100.0 * c / max(n, 1) for c, n in zip(per_task_correct, per_task_total, strict=True)]

    def record_pre_task(self, task: int, correct: int, total: int) -> None:
        """Record the counts on task `task`'s classes just before training it (among the classes seen up to it)."""
        self.pre_task[task] = 100.0 * correct / max(total, 1)

    def update(self, task: int, per_task_correct: list[int], per_task_total: list[int]) -> None:
        """Record the evaluation after training `task`: correct/total counts for tasks 0..task."""
        if task != len(self.acc):
            raise ValueError(f"expected results for task {len(self.acc)}, got task {task}")
        if len(per_task_correct) != task + 1 or len(per_task_total) != task + 1:
            raise ValueError("need one count per seen task")
        self.acc.append([100.0 * c / max(n, 1) for c, n in zip(per_task_correct, per_task_total, strict=True)])
        self.seen_accuracy.append(100.0 * sum(per_task_correct) / max(sum(per_task_total), 1))

    def update_clip_branch(self, task: int, per_task_correct: list[int], per_task_total: list[int]) -> None:
        """Record the CLIP branch's counts after training `task` (call after update)."""
        if task != len(self.clip_acc) or len(per_task_correct) != task + 1:
            raise ValueError(f"expected CLIP-branch results for task {len(self.clip_acc)}, got task {task}")
        self.clip_acc.append([100.0 * c / max(n, 1) for c, n in zip(per_task_correct, per_task_total, strict=True)])
        self.clip_seen_accuracy.append(100.0 * sum(per_task_correct) / max(sum(per_task_total), 1))

    def result(self) -> dict:
        out = summarize(self.acc, self.seen_accuracy, self.pre_task, self.zero_shot)
        if self.clip_acc and len(self.clip_acc) == len(self.acc):  # absent in runs resumed from segpcl <= 0.1
            clip = summarize(self.clip_acc, self.clip_seen_accuracy, self.pre_task, self.zero_shot)
            keys = ("accuracy_matrix", "seen_accuracy", "last", "avg", "forgetting", "bwt", "fwt")
            out["clip_branch"] = {k: clip[k] for k in (*keys, "pre_task_accuracy_mean")}
        return out

    def state(self) -> dict:
        return {
            "acc": self.acc,
            "seen_accuracy": self.seen_accuracy,
            "pre_task": self.pre_task,
            "zero_shot": self.zero_shot,
            "clip_acc": self.clip_acc,
            "clip_seen_accuracy": self.clip_seen_accuracy,
        }

    def load_state(self, state: dict) -> None:
        self.acc = [list(map(float, row)) for row in state["acc"]]
        self.seen_accuracy = list(map(float, seen_accuracy_of(state)))
        self.zero_shot = state.get("zero_shot")  # absent in checkpoints of segpcl <= 0.1: no FWT then
        pre = list(state.get("pre_task") or [])
        self.pre_task = (pre + [None] * self.n_tasks)[: self.n_tasks]
        self.clip_acc = [list(map(float, row)) for row in state.get("clip_acc") or []]
        self.clip_seen_accuracy = list(map(float, state.get("clip_seen_accuracy") or []))


def seen_accuracy_of(metrics: dict) -> list[float]:
    """The accuracy over all seen classes after each task (percent) of a metrics dict, old or new name."""
    return metrics["seen_accuracy"] if "seen_accuracy" in metrics else metrics["task_accuracy"]


def forgetting(acc: list[list[float]]) -> float:
    """Mean over j < T of (max over t < T of acc[t][j]) - acc[T][j]; 0 with one task."""
    T = len(acc) - 1
    if T < 1:
        return 0.0
    return float(np.mean([max(acc[t][j] for t in range(j, T)) - acc[T][j] for j in range(T)]))


def backward_transfer(acc: list[list[float]]) -> float:
    """Mean over j < T of acc[T][j] - acc[j][j]; 0 with one task."""
    T = len(acc) - 1
    if T < 1:
        return 0.0
    return float(np.mean([acc[T][j] - acc[j][j] for j in range(T)]))


def forward_transfer(pre_task: list[float | None], zero_shot: list[float] | None) -> float | None:
    """FWT (GEM's definition, Lopez-Paz & Ranzato 2017, with the zero-shot model as the reference): the mean over
    tasks t >= 2 (indices 1..T-1) of pre_task[t] - zero_shot[t], where pre_task[t] is the accuracy on task t's
    classes just before learning t (the model after t - 1) and zero_shot[t] the untrained model's, both predicting
    among the classes seen up to and including t. Tasks not measured are left out; None if none was, or without
    zero-shot accuracies; 0 with one task."""
    if zero_shot is None:
        return None
    pairs = [(p, zero_shot[t]) for t, p in enumerate(pre_task) if t >= 1 and p is not None and t < len(zero_shot)]
    if not pairs:
        return 0.0 if len(zero_shot) == 1 else None
    return float(np.mean([p - z for p, z in pairs]))


def summarize(
    acc: list[list[float]],
    seen_accuracy: list[float],
    pre_task: list[float | None] | None = None,
    zero_shot: list[float] | None = None,
) -> dict:
    measured = [p for t, p in enumerate(pre_task or []) if t >= 1 and p is not None]
    transfer = {
        "fwt": forward_transfer(pre_task or [], zero_shot),
        "pre_task_accuracy_mean": float(np.mean(measured)) if measured else None,
        "pre_task_accuracy": list(pre_task or []),
        "zero_shot_task_accuracy": zero_shot,
    }
    return {
        "units": "percent (top-1 accuracy, 0-100); forgetting and bwt in percentage points",
        "accuracy_matrix": acc,
        "seen_accuracy": seen_accuracy,
        "last": seen_accuracy[-1] if seen_accuracy else None,
        "avg": float(np.mean(seen_accuracy)) if seen_accuracy else None,
        "forgetting": forgetting(acc),
        "bwt": backward_transfer(acc),
        **transfer,
    }
