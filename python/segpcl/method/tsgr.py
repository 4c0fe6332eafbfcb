"""TSGR: text semantic-geometry regularisation on a key-relation subgraph of the teacher's text embeddings.

Edges (each class to its k most similar classes, and/or pairs above a threshold) are chosen once per task
by the Rust core; the loss is the mean over edges of the squared change in cosine similarity.
"""

from __future__ import annotations

import numpy as np
import torch

from .._core import select_key_edges


class TextGeometryRegularizer:
    def __init__(self, teacher_text: torch.Tensor, k: int | None = 5, threshold: float | None = None):
        """teacher_text: [C, d] L2-normalised teacher class embeddings of all seen classes."""
        sims = (teacher_text.float() @ teacher_text.float().T).cpu().numpy().astype(np.float32)
        edges, weights = select_key_edges(sims, k, threshold)
        device = teacher_text.device
        self.edges = torch.from_numpy(np.ascontiguousarray(edges)).to(device)
        self.teacher_cos = torch.from_numpy(weights).to(device)

    @property
    def n_edges(self) -> int:
        return len(self.edges)

    def loss(self, student_text: torch.Tensor) -> torch.Tensor:
        """Mean over edges (i, j) of (cos(T^S_i, T^S_j) - cos(T^T_i, T^T_j))^2; 0 without edges."""
        if self.n_edges == 0:
            return student_text.sum() * 0
        s = student_text.float()
        cos = (s[self.edges[:, 0]] * s[self.edges[:, 1]]).sum(dim=1)
        return ((cos - self.teacher_cos) ** 2).mean()
