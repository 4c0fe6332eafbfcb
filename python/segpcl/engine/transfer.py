"""The CLIP-branch evaluations: forward transfer (the zero-shot accuracy on every task's classes before any
training, and the accuracy on task t's classes just before learning it, the model after task t - 1, each
predicted among the classes seen up to and including that task) and the "CLIP branch only" accuracy matrix.
Both predict by the CLIP branch for every method: classes not learned yet have no prototype, so CLIP is the only
branch defined for them. See segpcl.metrics.

Cost: one pass over the whole test set for the zero-shot numbers (at the start), then one pass over task t's
test images before each later task, i.e. under two test-set passes per run, against (T + 1) / 2 for the usual
evaluation after every task and the epochs of training: about 1 % of a run's time, so it is always on. The
CLIP-branch matrix costs one more evaluation after every task, only for methods whose own inference is not
CLIP's (the dual path, NCM); for the others it is their own matrix.
"""

from __future__ import annotations

import time

from ..benchmarks.base import TaskStream
from ..metrics import AccuracyMatrix
from .evaluate import evaluate_stream


def _task_counts(learner, stream: TaskStream, loaders, t: int, device, progress: bool) -> tuple[int, int]:
    learner.use_branch(t, "clip")  # text of the classes seen up to and including task t; no prototypes
    correct, total, _ = evaluate_stream(learner.predict, loaders, stream, stream.task_test_set(t), t, device, progress)
    return correct[t], total[t]


def record_transfer(
    matrix: AccuracyMatrix, learner, stream: TaskStream, loaders, t: int, device, progress: bool, trains: bool
) -> float:
    """Call at the top of task t's iteration, before anything of task t runs. At t = 0 (nothing trained yet):
    the zero-shot accuracy of every task; at t >= 1: the accuracy on task t's classes before training it (a
    method that does not train keeps its zero-shot numbers, FWT 0). Returns the seconds spent."""
    start = time.perf_counter()
    if t == 0:
        counts = [_task_counts(learner, stream, loaders, j, device, progress) for j in range(stream.n_tasks)]
        matrix.set_zero_shot([c for c, _ in counts], [n for _, n in counts])
    elif matrix.zero_shot is not None:  # a run resumed from a checkpoint that predates FWT has no reference
        if trains:
            matrix.record_pre_task(t, *_task_counts(learner, stream, loaders, t, device, progress))
        else:
            matrix.pre_task[t] = matrix.zero_shot[t]
    return time.perf_counter() - start


def record_clip_branch(
    matrix: AccuracyMatrix, learner, stream: TaskStream, loaders, t: int, device, progress: bool, own: tuple
) -> float:
    """After task t's evaluation with the method's own inference (`own`: its correct and total counts, read
    after begin_eval(t)): the CLIP branch's counts on all seen classes, evaluated only where the method's
    inference is not CLIP's. Returns the seconds spent."""
    start = time.perf_counter()
    if len(matrix.clip_acc) != t:  # resumed from a checkpoint without CLIP-branch results: none for this run
        return 0.0
    if learner.predicts_by_clip:
        matrix.update_clip_branch(t, *own)
        return time.perf_counter() - start
    learner.use_branch(t, "clip")
    correct, total, _ = evaluate_stream(learner.predict, loaders, stream, stream.test_set(t), t, device, progress)
    learner.begin_eval(t)  # back to the method's own inference
    matrix.update_clip_branch(t, correct, total)
    return time.perf_counter() - start
