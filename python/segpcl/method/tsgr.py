"""TSGR: text semantic-geometry regularisation (DESIGN §4).

- rooted (paper; `RootedGeometryRegularizer`): for each new class c of the task, its k nearest other seen
  classes N(c) in the *reference* (zero-shot) text space R; q_c = softmax over N(c) of cos(R_c, R_j) / tau_T,
  p_c the same with the student's embeddings; loss = mean over new c of KL(q_c || p_c). Neighbourhoods are
  chosen once per task by the Rust core (`select_neighbors`); cost O(|new| k). Our reading: it acts from the
  first task on (the reference is the zero-shot model, not a teacher), neighbours among all seen classes.
- edges (`TextGeometryRegularizer`, the earlier reading): edges of each class to its k most similar classes
  and/or pairs above a threshold in the previous teacher's text space (Rust `select_key_edges`); loss = mean
  over edges of the squared change in cosine similarity.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .._core import select_key_edges, select_neighbors


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


class RootedGeometryRegularizer:
    def __init__(self, reference_text: torch.Tensor, roots: list[int], k: int = 10, tau: float = 0.05):
        """reference_text: [C_seen, d] L2-normalised zero-shot class embeddings of all seen classes;
        roots: the new classes (rows of reference_text)."""
        ref = reference_text.detach().float()
        sims = (ref @ ref.T).cpu().numpy().astype(np.float32)
        device = ref.device
        self.roots = torch.as_tensor(roots, dtype=torch.long, device=device)
        nbrs = select_neighbors(sims, np.asarray(roots, dtype=np.int64), int(k))
        self.neighbors = torch.from_numpy(np.ascontiguousarray(nbrs)).to(device)
        self.tau = float(tau)
        self.reference_log_q = F.log_softmax(self._cosines(ref) / self.tau, dim=1)

    @property
    def n_edges(self) -> int:
        return int(self.neighbors.numel())

    def _cosines(self, text: torch.Tensor) -> torch.Tensor:
        """[R, k] cos(text_root, text_neighbour) (rows normalised here)."""
        t = F.normalize(text.float(), dim=-1)
        return (t[self.roots][:, None, :] * t[self.neighbors]).sum(dim=-1)

    def loss(self, student_text: torch.Tensor) -> torch.Tensor:
        """Mean over roots of KL(q_root || p_root); 0 without neighbours."""
        if self.n_edges == 0:
            return student_text.sum() * 0
        log_p = F.log_softmax(self._cosines(student_text) / self.tau, dim=1)
        q = self.reference_log_q.exp()
        return (q * (self.reference_log_q - log_p)).sum(dim=1).mean()
