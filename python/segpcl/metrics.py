"""Continual-learning metrics, independent of the trainer (Avalanche style: update / result / reset).

acc[t][j] = top-1 accuracy (percent) on the test images of task j's classes after training task t,
predicting among all classes seen so far; seen_accuracy[t] = top-1 accuracy (percent) over all test images of
the classes seen after training task t (called `task_accuracy` in metrics.json files of segpcl <= 0.1, which
load_state and seen_accuracy_of still read). Every accuracy here is in percent (0-100).
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

    def update(self, task: int, per_task_correct: list[int], per_task_total: list[int]) -> None:
        """Record the evaluation after training `task`: correct/total counts for tasks 0..task."""
        if task != len(self.acc):
            raise ValueError(f"expected results for task {len(self.acc)}, got task {task}")
        if len(per_task_correct) != task + 1 or len(per_task_total) != task + 1:
            raise ValueError("need one count per seen task")
        self.acc.append([100.0 * c / max(n, 1) for c, n in zip(per_task_correct, per_task_total, strict=True)])
        self.seen_accuracy.append(100.0 * sum(per_task_correct) / max(sum(per_task_total), 1))

    def result(self) -> dict:
        return summarize(self.acc, self.seen_accuracy)

    def state(self) -> dict:
        return {"acc": self.acc, "seen_accuracy": self.seen_accuracy}

    def load_state(self, state: dict) -> None:
        self.acc = [list(map(float, row)) for row in state["acc"]]
        self.seen_accuracy = list(map(float, seen_accuracy_of(state)))


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


def summarize(acc: list[list[float]], seen_accuracy: list[float]) -> dict:
    return {
        "units": "percent (top-1 accuracy, 0-100); forgetting and bwt in percentage points",
        "accuracy_matrix": acc,
        "seen_accuracy": seen_accuracy,
        "last": seen_accuracy[-1] if seen_accuracy else None,
        "avg": float(np.mean(seen_accuracy)) if seen_accuracy else None,
        "forgetting": forgetting(acc),
        "bwt": backward_transfer(acc),
    }
