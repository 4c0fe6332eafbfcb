"""Boundary-vs-core drift diagnostic: where the cross-modal geometry of old classes drifts during a task.

Definitions (DESIGN §4 notation; the choices are ours). At task t >= 2 (1-based), teacher T = the frozen model
at the end of task t-1, student S = the model at the end of task t (after the method's after_task: ZSCL's weight
average and RAPF's fusion are part of it; prototypes and MG-CLIP's visual agent are not, the measure is of the
CLIP branch); old = classes of tasks < t, new = classes of task t, seen = old + new. f_M is CLIP's normalised
image feature passed through the method's `feature_head` where it has one (RAPF's W f, normalised).

- Drift of a sample x: D(x) = JSD(p_T(x), p_S(x)) with p_M(x) = softmax(s_M cos(f_M(x), T^M_old)) over the
  **old** classes (each model's own logit scale and class text embeddings; natural log, so 0 <= D <= ln 2).
  Also reported: the same over all seen classes (`jsd_seen`) and the visual drift 1 - cos(v_T(x), v_S(x)) in
  the raw visual space (`visual`; the joint space f when the tower has no projection).
- Samples (diagnostic only: never used for training or by any decision of the method): old-class **test**
  images (at most `max_per_class` per class, the first ones), the task's anchors, their seeds (the new-task
  images the anchors started from, before PGD), and `n_new` random new-task training images (a fixed seed per
  task). For a method that builds no anchors (`lora`), the diagnostic builds
  its own from the same teacher before the task with the configured DPGD settings (`anchors_source: probe`,
  text target only where the method keeps no prototypes, the random state restored): where the anchors would
  be, so D(anchors) vs D(new) under naive training tests the premise of anchor distillation.
- Boundary score, from the teacher alone: b(x) = max over new classes n of cos(f_T(x), T^T_n) minus
  cos(f_T(x), T^T_y(x)). Within each old class (sorted by b, ties by index), boundary = the top 20 % of its
  samples, core = the bottom 20 % (k = max(1, floor(0.2 n_c)) each; classes with fewer than 2 samples are left
  out).
- R_t = mean D(boundary) / mean D(core), with a percentile bootstrap 95 % interval: 1000 resamples, each group
  resampled with replacement within itself, seed 0. Every group mean also carries a bootstrap interval.
- On the toy benchmark, old classes are also split by kind: those that share a colour or a shape with some
  new class (`sharing`) and those that share nothing (`not_sharing`); `ratio_kind` = mean D(sharing) /
  mean D(not_sharing) is the ground-truth counterpart of R_t (with `data.class_order=boundary` both kinds
  exist by construction, see `segpcl.benchmarks.toy.boundary_class_order`).

`drift_diagnostic` is the pure computation (models, text embeddings, batches in; a JSON-ready dict out);
`diagnose_task` is what the trainer calls under `--diagnose`; `drift_table` and `drift_svg` render the
entries (in drift_render.py, re-exported here); `python -m segpcl.analysis DIR...` summarises runs (e.g. an
ablation folder) over seeds.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .ablation_table import BASELINE, paired_interval, t_half_width
from .drift_render import GROUP_COLOURS, GROUPS, drift_svg, drift_table, summary_markdown

__all__ = [
    "BOOT_SEED",
    "BOUNDARY_FRACTION",
    "GROUP_COLOURS",
    "GROUPS",
    "MAX_PER_CLASS",
    "N_BOOT",
    "N_NEW",
    "RATIOS_OF_MEANS",
    "SUMMARY_KEYS",
    "Diagnosis",
    "DriftInputs",
    "begin_diagnosis",
    "bootstrap_mean",
    "bootstrap_ratio",
    "boundary_core_split",
    "boundary_scores",
    "capped_indices",
    "diagnose_task",
    "drift_diagnostic",
    "drift_summary",
    "drift_svg",
    "drift_table",
    "images_at",
    "js_divergence",
    "main",
    "run_value",
    "summary_markdown",
    "toy_sharing",
]

BOUNDARY_FRACTION = 0.2
N_BOOT = 1000
BOOT_SEED = 0
MAX_PER_CLASS = 50
N_NEW = 256


# ----------------------------------------------------------------------------------------- pure parts


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Row-wise Jensen-Shannon divergence (natural log) of distributions p, q [N, C]: 0 for identical rows,
    ln 2 for rows with disjoint support."""
    p, q = p.double(), q.double()
    m = 0.5 * (p + q)

    def kl(a: torch.Tensor) -> torch.Tensor:
        terms = torch.where(a > 0, a * (torch.log(a.clamp_min(1e-300)) - torch.log(m.clamp_min(1e-300))), 0.0)
        return terms.sum(dim=-1)

    return (0.5 * kl(p) + 0.5 * kl(q)).clamp_min(0.0).float()


def boundary_scores(f_teacher: torch.Tensor, text_teacher: torch.Tensor, labels: torch.Tensor, n_old: int):
    """b(x) = max over new classes n of cos(f_T(x), T^T_n) - cos(f_T(x), T^T_y(x)); f and T normalised,
    `text_teacher` [n_seen, d] with the new classes at rows n_old.."""
    sims = f_teacher.float() @ text_teacher.float().T
    return sims[:, n_old:].max(dim=1).values - sims.gather(1, labels.long().view(-1, 1)).squeeze(1)


def boundary_core_split(
    scores: torch.Tensor, labels: torch.Tensor, frac: float = BOUNDARY_FRACTION
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks (boundary, core): within each class, the top / bottom `frac` of the scores
    (k = max(1, floor(frac n_c)) each; stable order, so ties go by index; classes with < 2 samples: neither)."""
    scores, labels = scores.detach().cpu(), labels.detach().cpu()
    boundary = torch.zeros(len(scores), dtype=torch.bool)
    core = torch.zeros(len(scores), dtype=torch.bool)
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        n = len(idx)
        if n < 2:
            continue
        k = max(1, int(math.floor(frac * n + 1e-9)))
        k = min(k, n // 2)
        order = idx[torch.sort(scores[idx], stable=True).indices]
        core[order[:k]] = True
        boundary[order[n - k :]] = True
    return boundary, core


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.percentile(values, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def bootstrap_mean(values, n_boot: int = N_BOOT, seed: int = BOOT_SEED, level: float = 0.95) -> dict | None:
    """{"value", "low", "high"}: the mean with a percentile bootstrap interval (None for no values)."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return None
    rng = np.random.RandomState(seed)
    means = x[rng.randint(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    lo, hi = _interval(means, level)
    return {"value": float(x.mean()), "low": lo, "high": hi}


def bootstrap_ratio(
    numerator, denominator, n_boot: int = N_BOOT, seed: int = BOOT_SEED, level: float = 0.95
) -> dict | None:
    """{"value", "low", "high"}: mean(numerator) / mean(denominator) with a percentile bootstrap interval,
    each group resampled with replacement within itself (a fixed seed: the same inputs give the same interval).
    None when a group is empty or the denominator's mean is not positive."""
    a, b = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    if len(a) == 0 or len(b) == 0 or b.mean() <= 0:
        return None
    rng = np.random.RandomState(seed)
    ma = a[rng.randint(0, len(a), size=(n_boot, len(a)))].mean(axis=1)
    mb = b[rng.randint(0, len(b), size=(n_boot, len(b)))].mean(axis=1)
    ok = mb > 0
    lo, hi = _interval(ma[ok] / mb[ok], level) if ok.any() else (float("nan"), float("nan"))
    return {"value": float(a.mean() / b.mean()), "low": lo, "high": hi}


# ----------------------------------------------------------------------------------------- the measurement


@dataclass
class DriftInputs:
    """Per-sample measurements of one group (CPU tensors)."""

    jsd: torch.Tensor
    jsd_seen: torch.Tensor
    visual: torch.Tensor

    @staticmethod
    def cat(parts: list[DriftInputs]) -> DriftInputs:
        if not parts:
            e = torch.zeros(0)
            return DriftInputs(e, e, e)
        return DriftInputs(*(torch.cat([getattr(p, k) for p in parts]) for k in ("jsd", "jsd_seen", "visual")))

    def select(self, mask: torch.Tensor) -> DriftInputs:
        return DriftInputs(self.jsd[mask], self.jsd_seen[mask], self.visual[mask])


def _encoder(model, head=None) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """x -> (the features the method compares with the text: `head` of CLIP's, if given; the raw visual ones)."""

    def encode(x):
        if model.raw_dim is not None:
            f, v = model.image_features_and_raw(x)
        else:
            f = v = model.image_features(x)
        return (f if head is None else head(f)), v

    return encode


def _chunks(images: torch.Tensor, size: int = 256):
    for i in range(0, len(images), size):
        yield images[i : i + size], None


class _PairedEncoder:
    """Per-sample drift of a batch of images between teacher and student (module docstring): JSD over the old
    classes and over all seen classes, and the visual drift; also the teacher's normalised features."""

    def __init__(self, teacher, student, teacher_text, student_text, n_old: int, autocast, heads=(None, None)):
        self.enc_t, self.enc_s = _encoder(teacher, heads[0]), _encoder(student, heads[1])
        self.scale_t, self.scale_s = float(teacher.logit_scale()), float(student.logit_scale())
        self.text_t, self.text_s = teacher_text.float(), student_text.float()
        self.n_old, self.autocast = n_old, autocast

    def __call__(self, images: torch.Tensor) -> tuple[DriftInputs, torch.Tensor]:
        with self.autocast():
            f_t, v_t = self.enc_t(images)
            f_s, v_s = self.enc_s(images)
        f_t, v_t, f_s, v_s = f_t.float(), v_t.float(), f_s.float(), v_s.float()
        cos_t, cos_s = f_t @ self.text_t.T, f_s @ self.text_s.T
        n_old, scale_t, scale_s = self.n_old, self.scale_t, self.scale_s
        old = js_divergence(
            torch.softmax(scale_t * cos_t[:, :n_old], dim=1), torch.softmax(scale_s * cos_s[:, :n_old], dim=1)
        )
        seen = js_divergence(torch.softmax(scale_t * cos_t, dim=1), torch.softmax(scale_s * cos_s, dim=1))
        visual = 1 - F.cosine_similarity(v_t, v_s, dim=1)
        return DriftInputs(old.cpu(), seen.cpu(), visual.cpu()), f_t

    def images(self, images: torch.Tensor | None) -> DriftInputs | None:
        """The drift of a stack of images, measured in chunks (None for no images)."""
        if images is None or not len(images):
            return None
        return DriftInputs.cat([self(x)[0] for x, _ in _chunks(images)])


def _measure_old_classes(
    measure: _PairedEncoder, old_batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[DriftInputs, torch.Tensor, torch.Tensor]:
    """The drift of every old-class test image, with its boundary score (from the teacher) and its label."""
    parts, scores, labels = [], [], []
    for images, y in old_batches:
        d, f_t = measure(images)
        parts.append(d)
        scores.append(boundary_scores(f_t, measure.text_t, y.to(f_t.device), measure.n_old).cpu())
        labels.append(y.cpu())
    score = torch.cat(scores) if scores else torch.zeros(0)
    label = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
    return DriftInputs.cat(parts), score, label


def _sample_groups(
    measure: _PairedEncoder,
    old: DriftInputs,
    score: torch.Tensor,
    label: torch.Tensor,
    frac: float,
    anchor_images: torch.Tensor | None,
    seed_images: torch.Tensor | None,
    new_batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None,
    sharing: torch.Tensor | None,
) -> dict[str, DriftInputs | None]:
    """The groups compared (None: not measured): boundary and core of the old classes, all old, anchors, new,
    then seeds (when given) and the toy world's sharing / not_sharing old classes (when `sharing` is)."""
    is_boundary, is_core = boundary_core_split(score, label, frac)
    groups: dict[str, DriftInputs | None] = {
        "boundary": old.select(is_boundary),
        "core": old.select(is_core),
        "old": old,
        "anchors": measure.images(anchor_images),
        "new": None,
    }
    seeds = measure.images(seed_images)
    if seeds is not None:
        groups["seeds"] = seeds
    if new_batches is not None:
        new = DriftInputs.cat([measure(x)[0] for x, _ in new_batches])
        groups["new"] = new if len(new.jsd) else None
    if sharing is not None:
        kind = sharing.cpu().bool()[label.long()] if len(label) else torch.zeros(0, dtype=torch.bool)
        groups["sharing"], groups["not_sharing"] = old.select(kind), old.select(~kind)
    return groups


def _group_stats(g: DriftInputs | None, n_boot: int, seed: int) -> dict:
    """Size of a group and its mean drift by each measure (the old-class JSD with a bootstrap interval)."""
    if g is None or len(g.jsd) == 0:
        return {"n": 0}
    m = bootstrap_mean(g.jsd.numpy(), n_boot, seed)
    return {
        "n": len(g.jsd),
        "jsd": m["value"],
        "jsd_low": m["low"],
        "jsd_high": m["high"],
        "jsd_seen": float(g.jsd_seen.mean()),
        "visual": float(g.visual.mean()),
    }


def _summarise_groups(
    groups: dict[str, DriftInputs | None], score: torch.Tensor, n_old: int, n_seen: int, sharing, settings: dict
) -> dict:
    """The diagnostic's JSON: group statistics, the ratios of group means with bootstrap intervals, settings."""
    n_boot, seed = settings["n_boot"], settings["seed"]

    def ratio(a: str, b: str, key: str = "jsd") -> dict | None:
        ga, gb = groups.get(a), groups.get(b)
        if ga is None or gb is None:
            return None
        return bootstrap_ratio(getattr(ga, key).numpy(), getattr(gb, key).numpy(), n_boot, seed)

    out = {
        "n_old_classes": n_old,
        "n_new_classes": int(n_seen - n_old),
        "groups": {name: _group_stats(g, n_boot, seed) for name, g in groups.items()},
        "ratio": ratio("boundary", "core"),
        "ratio_seen": ratio("boundary", "core", "jsd_seen"),
        "ratio_visual": ratio("boundary", "core", "visual"),
        "anchors_vs_new": ratio("anchors", "new"),
        "anchors_vs_new_seen": ratio("anchors", "new", "jsd_seen"),
        "anchors_vs_new_visual": ratio("anchors", "new", "visual"),
        "seeds_vs_new": ratio("seeds", "new"),
        "mean_boundary_score": float(score.mean()) if len(score) else None,
        "settings": settings,
    }
    if sharing is not None:
        out["ratio_kind"] = ratio("sharing", "not_sharing")
        out["sharing_classes"] = int(sharing.sum())
    return out


@torch.no_grad()
def drift_diagnostic(
    teacher,
    student,
    teacher_text: torch.Tensor,
    student_text: torch.Tensor,
    n_old: int,
    old_batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    anchor_images: torch.Tensor | None = None,
    seed_images: torch.Tensor | None = None,
    new_batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
    sharing: torch.Tensor | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    frac: float = BOUNDARY_FRACTION,
    n_boot: int = N_BOOT,
    seed: int = BOOT_SEED,
    heads: tuple = (None, None),
) -> dict:
    """The diagnostic of one task (module docstring). `teacher_text`, `student_text`: normalised class text
    embeddings [n_seen, d] of each model; `old_batches`: (images, labels) of old-class test images, labels in
    0..n_old-1; `sharing`: optional bool [n_old], True for old classes of the `sharing` kind; `heads`: the
    teacher's and the student's `feature_head` (ContinualMethod), None for CLIP's own features. Returns the group
    sizes and means (with intervals), the ratios and the settings, as plain JSON values."""
    measure = _PairedEncoder(teacher, student, teacher_text, student_text, n_old, autocast, heads)
    old, score, label = _measure_old_classes(measure, old_batches)
    groups = _sample_groups(measure, old, score, label, frac, anchor_images, seed_images, new_batches, sharing)
    settings = {"boundary_fraction": frac, "n_boot": n_boot, "seed": seed}
    return _summarise_groups(groups, score, n_old, len(measure.text_t), sharing, settings)


# ----------------------------------------------------------------------------------------- engine glue


def capped_indices(labels: np.ndarray, cap: int) -> np.ndarray:
    """Indices of the first `cap` samples of each label, in their original order."""
    keep = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        keep[np.nonzero(labels == c)[0][:cap]] = True
    return np.nonzero(keep)[0]


def toy_sharing(stream, t: int) -> torch.Tensor | None:
    """On the toy benchmark: bool [n_old], True for old classes sharing a colour or a shape with a class of
    task t (stream positions); None on other benchmarks."""
    if stream.bench.name != "toy":
        return None
    from .. import toyworld as tw

    ids = np.asarray(stream.class_order)
    colour, shape = tw.split_class(ids)
    new = stream.task_range(t)
    n_old = new.start
    new_c, new_s = set(colour[new.start : new.stop].tolist()), set(shape[new.start : new.stop].tolist())
    return torch.tensor([bool(colour[i] in new_c or shape[i] in new_s) for i in range(n_old)])


@dataclass
class Diagnosis:
    """What the diagnostic of a task keeps from its start: the teacher model, the teacher's feature head
    (ContinualMethod.feature_head at the task's start) and the probe anchors (None: the method's own)."""

    teacher: object
    head: Callable[[torch.Tensor], torch.Tensor] | None
    probe: object = None


def begin_diagnosis(learner, train_batches, device: torch.device) -> Diagnosis:
    """At the start of task t >= 1, before training. The teacher is the learner's own, or a frozen copy of the
    model for methods that build none; probe = anchors from it with the configured DPGD settings for methods that
    build no anchors (else None), made with the random state restored so the run is the same as without the
    diagnostic."""
    from ..models.lora import frozen_teacher

    own = getattr(learner, "teacher", None)
    teacher = own if own is not None else frozen_teacher(learner.model)
    head = learner.feature_head()
    if getattr(learner, "anchors", None) is not None:
        return Diagnosis(teacher, head)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if hasattr(learner, "probe_anchors"):
            return Diagnosis(teacher, head, learner.probe_anchors(teacher, train_batches))
        return Diagnosis(teacher, head, _text_probe_anchors(learner, teacher, head, train_batches))


def _text_probe_anchors(method, teacher, head, train_batches):
    """Probe anchors for a method that is not one of SeGP-CL's rows (a peer): DPGD with the run's method
    settings toward the old classes' text only (a peer keeps no raw-space prototypes to aim at), through the
    method's feature head where it has one."""
    from ..method.anchors import build_anchors, pgd_settings

    with torch.no_grad():
        text = method.class_text(teacher, method.n_seen())

    def encode(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = teacher.image_features(x)
        f = f if head is None else head(f)
        return f, f

    return build_anchors(
        encode,
        (images for images, _ in train_batches),
        text,
        method.n_old(),
        None,
        float(teacher.logit_scale()),
        lambda_p=0.0,
        autocast=method.autocast,
        comm=method.comm,
        **pgd_settings(method.cfg),
    )


def images_at(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], positions: torch.Tensor) -> torch.Tensor | None:
    """The images at `positions` (repeats allowed) of a stream of (images, labels) batches, in the order of
    `positions`; None when a position is past the stream's end."""
    uniq, inverse = torch.unique(positions.cpu().long(), return_inverse=True)
    got, offset = [], 0
    for images, _ in batches:
        sel = uniq[(uniq >= offset) & (uniq < offset + len(images))] - offset
        if len(sel):
            got.append(images[sel.to(images.device)])
        offset += len(images)
    found = torch.cat(got) if got else None
    return found[inverse.to(found.device)] if found is not None and len(found) == len(uniq) else None


@torch.no_grad()
def diagnose_task(
    learner, diagnosis: Diagnosis, stream, ordered_batches, t: int, max_per_class: int = MAX_PER_CLASS
) -> dict:
    """The diagnostic of task t (0-based, t >= 1) for the engine, called after the task's after_task (so the
    student is the task's final model: ZSCL's weight average and RAPF's fusion included): `diagnosis` from
    begin_diagnosis (the frozen model of task t-1, its feature head, the probe anchors built for the diagnostic
    alone when the method builds none), the learner's model the student; `ordered_batches(dataset)` yields
    (images, labels) on the device."""
    from torch.utils.data import Subset

    teacher, probe = diagnosis.teacher, diagnosis.probe

    n_old, n_seen = stream.n_seen(t - 1), stream.n_seen(t)
    with learner.autocast():
        teacher_text = learner.class_text(teacher, n_seen).float()
        student_text = learner.student_text(n_seen).float()
    old_ds = stream.test_set(t - 1)
    old_labels = stream.id_to_pos[np.asarray(stream.bench.test_targets, dtype=np.int64)[old_ds.indices]]
    old_subset = Subset(old_ds, capped_indices(old_labels, max_per_class).tolist())
    new_ds = stream.train_set(t)
    rng = np.random.RandomState(BOOT_SEED + 7919 * (t + 1))
    pick = np.sort(rng.permutation(len(new_ds))[:N_NEW])
    own = getattr(learner, "anchors", None)
    source = own if own is not None else probe
    anchors = source.images if source is not None else None
    seeds = None  # the anchors' images before PGD: the new-task images they started from (not for `ref`)
    if source is not None and (probe is not None or learner.switches.source in ("anchors", "seeds")):
        seeds = images_at(ordered_batches(new_ds), source.seed_indices)
    entry = drift_diagnostic(
        teacher,
        learner.model,
        teacher_text,
        student_text,
        n_old,
        ordered_batches(old_subset),
        anchor_images=anchors,
        seed_images=seeds,
        new_batches=ordered_batches(Subset(new_ds, pick.tolist())),
        sharing=toy_sharing(stream, t),
        autocast=learner.autocast,
        heads=(diagnosis.head, learner.feature_head()),
    )
    kind = "method" if own is not None else "probe" if probe is not None else None
    return {"task": t + 1, **entry, "anchors_source": kind, "max_per_class": max_per_class}


# ----------------------------------------------------------------------------------------- several runs


def _across(values: list[float]) -> dict | None:
    """Mean over runs with a t-based 95 % interval (None without values)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if len(x) == 0:
        return None
    if len(x) == 1:
        return {"value": float(x[0]), "low": float(x[0]), "high": float(x[0]), "runs": 1}
    half = t_half_width(x)
    return {"value": float(x.mean()), "low": float(x.mean() - half), "high": float(x.mean() + half), "runs": len(x)}


RATIOS_OF_MEANS = {
    "anchors_vs_new_seen": ("anchors", "new", "jsd_seen"),
    "anchors_vs_new_visual": ("anchors", "new", "visual"),
    "seeds_vs_new_seen": ("seeds", "new", "jsd_seen"),
    "seeds_vs_new_visual": ("seeds", "new", "visual"),
}
"""Ratios that runs measured before they were recorded can be rebuilt from the stored group means."""


def _task_value(entry: dict, key: str) -> float | None:
    if key.startswith("groups."):
        g = entry["groups"].get(key.split(".", 1)[1], {})
        return g.get("jsd") if g.get("n") else None
    if entry.get(key):
        return entry[key]["value"]
    if key in RATIOS_OF_MEANS:
        a, b, field = RATIOS_OF_MEANS[key]
        ga, gb = entry["groups"].get(a, {}), entry["groups"].get(b, {})
        if ga.get("n") and gb.get("n") and gb.get(field, 0) > 0:
            return ga[field] / gb[field]
    return None


def run_value(metrics: dict, key: str) -> float | None:
    """The mean over tasks of one run's ratio `key` (ratio, ratio_kind, anchors_vs_new, ...) or group mean
    (`groups.anchors`)."""
    vals = [_task_value(e, key) for e in metrics.get("drift") or []]
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else None


SUMMARY_KEYS = (
    "ratio",
    "ratio_kind",
    "anchors_vs_new",
    "anchors_vs_new_seen",
    "anchors_vs_new_visual",
    "seeds_vs_new",
    "seeds_vs_new_seen",
    "seeds_vs_new_visual",
    "groups.boundary",
    "groups.core",
    "groups.anchors",
    "groups.new",
)


def drift_summary(runs: list[dict]) -> dict:
    """Per method (or ablation row: a run's `row`, set by `main` from its folder name): each key's per-run value
    (the mean over tasks) averaged over the runs (seeds), with a t-based 95 % interval over the runs."""
    by_method: dict[str, list[dict]] = {}
    for m in runs:
        if m.get("drift"):  # an ablation row (segpcl-tsgr-from2) is its own group, not its method's (segpcl)
            by_method.setdefault(str(m.get("row") or m.get("method")), []).append(m)
    summary = {
        method: {key: _across([run_value(m, key) for m in ms]) for key in SUMMARY_KEYS}
        for method, ms in sorted(by_method.items(), key=lambda kv: (kv[0] != BASELINE, kv[0]))
    }
    base = {m.get("seed"): run_value(m, "ratio") for m in by_method.get(BASELINE, [])}
    for method, ms in by_method.items():
        pairs = [(run_value(m, "ratio"), base.get(m.get("seed"))) for m in ms] if method != BASELINE else []
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        if pairs:  # R - R(lora), paired by seed
            summary[method]["ratio_vs_" + BASELINE] = paired_interval([a for a, _ in pairs], [b for _, b in pairs])
    return summary


def main(argv: list[str] | None = None) -> int:
    """`python -m segpcl.analysis DIR...`: the drift summary of run directories, metrics.json files, or
    folders holding run directories (an ablation's --out), as a markdown table; writes nothing."""
    import json
    import re
    import sys
    from pathlib import Path

    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m segpcl.analysis RUN_DIR_OR_ABLATION_DIR...", file=sys.stderr)
        return 2
    files: list[Path] = []
    for a in map(Path, args):
        if a.is_file():
            files.append(a)
        elif (a / "metrics.json").is_file():
            files.append(a / "metrics.json")
        else:
            files.extend(sorted(a.glob("*/metrics.json")))
    runs = []
    for f in files:
        try:
            run = json.loads(f.read_text())
        except (OSError, ValueError):
            print(f"skipped {f}: not readable JSON", file=sys.stderr)
            continue
        row = re.fullmatch(r"(.+)-seed\d+(-[0-9a-f]+)?", f.parent.name)  # an ablation's <row>-seed<N>[-<hash>]
        if isinstance(run, dict) and row:
            run["row"] = row.group(1)
        runs.append(run)
    summary = drift_summary(runs)
    if not summary:
        print("no run with a drift diagnostic (train with --diagnose)", file=sys.stderr)
        return 1
    print(summary_markdown(summary))
    return 0
