"""The embedded toy world: captioned renderings of coloured shapes in two domains.

Classes are (colour, shape) pairs, e.g. "red circle". The *pretraining* domain shows bright shapes on dark,
plain backgrounds; the *downstream* domain is shifted (tinted low-frequency noise and gradients, pixel
noise, a gray distractor shape, smaller and dimmer shapes). Classes that share a colour or a shape make real
old/new semantic boundaries. Rendering is vectorised numpy from a seed, so every image set is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RENDER_VERSION = 1
"""Bump when rendering changes: cached renderings and the cached toy CLIP are keyed by it."""

SHAPES = ["circle", "square", "triangle", "cross", "ring", "star", "hexagon", "heart"]
COLOURS = {
    "red": (0.90, 0.12, 0.12),
    "orange": (1.00, 0.55, 0.05),
    "yellow": (0.95, 0.90, 0.10),
    "green": (0.15, 0.80, 0.20),
    "cyan": (0.10, 0.85, 0.90),
    "blue": (0.15, 0.30, 0.95),
    "purple": (0.60, 0.20, 0.85),
    "pink": (1.00, 0.50, 0.75),
}
SIZES = ["small", "large"]
CLASS_NAMES = [f"{c} {s}" for s in SHAPES for c in COLOURS]


@dataclass(frozen=True)
class Domain:
    """How a domain renders: scale range, colour gain, background and noise strengths."""

    scale: tuple[float, float]
    colour_gain: tuple[float, float]
    background: float
    """Strength of tinted low-frequency noise and gradients in the background (0: plain dark)."""
    pixel_noise: float
    distractor: float
    """Probability of a gray distractor shape."""
    max_rotation: float = 20.0


PRETRAIN = Domain(scale=(0.45, 0.7), colour_gain=(0.85, 1.0), background=0.0, pixel_noise=0.02, distractor=0.0)
MILD_SHIFT = Domain(scale=(0.4, 0.62), colour_gain=(0.7, 1.0), background=0.25, pixel_noise=0.04, distractor=0.2)
DOWNSTREAM = Domain(scale=(0.32, 0.52), colour_gain=(0.55, 0.9), background=0.5, pixel_noise=0.07, distractor=0.6)


def _shape_sdf(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) of a unit-size shape in its own rotated frame."""
    r = np.sqrt(u * u + v * v)
    if shape == "circle":
        return r - 0.9
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.75
    if shape == "triangle":
        return np.maximum(np.abs(u) * 0.866 + v * 0.5, -v) - 0.45
    if shape == "cross":
        a = np.maximum(np.abs(u) - 0.3, np.abs(v) - 0.95)
        b = np.maximum(np.abs(u) - 0.95, np.abs(v) - 0.3)
        return np.minimum(a, b)
    if shape == "ring":
        return np.abs(r - 0.7) - 0.25
    if shape == "star":
        theta = np.arctan2(v, u)
        return r - (0.55 + 0.4 * np.cos(5 * theta + np.pi / 2))
    if shape == "hexagon":
        au, av = np.abs(u), np.abs(v)
        return np.maximum(au * 0.866 + av * 0.5, av) - 0.8
    if shape == "heart":
        uu, vv = u * 1.1, -v * 1.1 + 0.25
        return (uu * uu + vv * vv - 0.6) ** 3 - uu * uu * vv**3 * 1.2
    raise ValueError(f"unknown shape {shape!r}")


def _low_freq_noise(rng: np.random.Generator, n: int, size: int, cells: int = 4) -> np.ndarray:
    """Smooth noise [n, size, size, 3] by bilinear upsampling of a coarse random grid."""
    coarse = rng.random((n, cells + 1, cells + 1, 3))
    pos = np.linspace(0, cells, size)
    i0 = np.minimum(pos.astype(int), cells - 1)
    f = (pos - i0)[None, :, None, None]
    rows = coarse[:, i0] * (1 - f) + coarse[:, i0 + 1] * f
    f2 = (pos - i0)[None, None, :, None]
    return rows[:, :, i0] * (1 - f2) + rows[:, :, i0 + 1] * f2


def render(
    colour_ids: np.ndarray,
    shape_ids: np.ndarray,
    domain: Domain,
    seed: int,
    size: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """Render images of the given classes. Returns uint8 images [n, size, size, 3] and size ids [n]."""
    rng = np.random.default_rng(seed)
    n = len(colour_ids)
    grid = (np.arange(size) + 0.5) / size * 2 - 1
    yy, xx = np.meshgrid(grid, grid, indexing="ij")

    if domain.background > 0:
        noise = _low_freq_noise(rng, n, size)
        tint = rng.random((n, 1, 1, 3))
        slope = rng.normal(size=(n, 2))
        gradient = (slope[:, 0, None, None] * xx + slope[:, 1, None, None] * yy)[..., None] * 0.15
        img = 0.08 + domain.background * (0.5 * noise * tint + gradient + 0.15)
    else:
        img = np.broadcast_to(rng.uniform(0.0, 0.12, (n, 1, 1, 1)), (n, size, size, 3)).copy()

    scale = rng.uniform(*domain.scale, n)
    size_ids = (scale > np.mean(domain.scale)).astype(np.int64)
    margin = np.maximum(1 - scale * 1.05, 0.0)
    cx, cy = rng.uniform(-margin, margin), rng.uniform(-margin, margin)
    angle = np.deg2rad(rng.uniform(-domain.max_rotation, domain.max_rotation, n))
    gain = rng.uniform(*domain.colour_gain, n)

    if domain.distractor > 0:
        has = rng.random(n) < domain.distractor
        dshape = rng.integers(0, len(SHAPES), n)
        dx, dy = rng.uniform(-0.75, 0.75, n), rng.uniform(-0.75, 0.75, n)
        dscale = rng.uniform(0.18, 0.28, n)
        gray = rng.uniform(0.35, 0.6, n)
        for s_id, s_name in enumerate(SHAPES):
            sel = np.nonzero(has & (dshape == s_id))[0]
            if len(sel):
                u = (xx[None] - dx[sel, None, None]) / dscale[sel, None, None]
                v = (yy[None] - dy[sel, None, None]) / dscale[sel, None, None]
                sd = _shape_sdf(s_name, u, v) * dscale[sel, None, None] * size / 2
                alpha = np.clip(0.5 - sd, 0, 1)[..., None]
                img[sel] = img[sel] * (1 - alpha) + gray[sel, None, None, None] * alpha

    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    dxg, dyg = xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]
    u = (cos * dxg + sin * dyg) / scale[:, None, None]
    v = (-sin * dxg + cos * dyg) / scale[:, None, None]
    palette = np.array(list(COLOURS.values()))
    for s_id, s_name in enumerate(SHAPES):
        sel = np.nonzero(shape_ids == s_id)[0]
        if len(sel) == 0:
            continue
        sd = _shape_sdf(s_name, u[sel], v[sel]) * scale[sel, None, None] * size / 2
        alpha = np.clip(0.5 - sd, 0, 1)[..., None]
        colour = palette[colour_ids[sel]] * gain[sel, None]
        img[sel] = img[sel] * (1 - alpha) + colour[:, None, None, :] * alpha

    img = img + rng.normal(0, domain.pixel_noise, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), size_ids


def class_of(colour_ids: np.ndarray, shape_ids: np.ndarray) -> np.ndarray:
    """Class index of (colour, shape) pairs, matching CLASS_NAMES."""
    return shape_ids * len(COLOURS) + colour_ids


def split_class(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(colour_ids, shape_ids) of class indices."""
    return labels % len(COLOURS), labels // len(COLOURS)


CAPTION_TEMPLATES = [
    "a {}.",
    "a photo of a {}.",
    "a {size} {name}.",
    "a picture of a {size} {name}.",
    "an image of a {}.",
]


def captions(labels: np.ndarray, size_ids: np.ndarray, rng: np.random.Generator) -> list[str]:
    """One caption per image, from a few phrasings that mention colour, shape and sometimes size."""
    out = []
    which = rng.integers(0, len(CAPTION_TEMPLATES), len(labels))
    for label, s, w in zip(labels.tolist(), size_ids.tolist(), which.tolist(), strict=True):
        template = CAPTION_TEMPLATES[w]
        name = CLASS_NAMES[label]
        out.append(template.format(name, size=SIZES[s], name=name) if "{size}" in template else template.format(name))
    return out
