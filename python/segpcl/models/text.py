"""Class text embeddings: mean over prompt templates of L2-normalised embeddings, renormalised."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .clip import ClipModel


def class_prompts(class_names: list[str], templates: list[str]) -> list[str]:
    """Prompts in class-major order: class 0 with every template, then class 1, ..."""
    return [t.format(name) for name in class_names for t in templates]


def class_text_embeddings(model: ClipModel, tokens: torch.Tensor, n_templates: int, chunk: int = 1024) -> torch.Tensor:
    """[C, d] class embeddings from class-major prompt tokens [C * n_templates, L]. Differentiable."""
    feats = torch.cat([model.text_features(tokens[i : i + chunk]) for i in range(0, len(tokens), chunk)])
    feats = feats.view(-1, n_templates, feats.shape[-1]).mean(dim=1)
    return F.normalize(feats, dim=-1)


class TextEmbeddingCache:
    """Class text embeddings of one model, computed once; valid while that model's text tower is frozen."""

    def __init__(self, model: ClipModel, class_names: list[str], templates: list[str]):
        self.tokens = model.tokenize(class_prompts(class_names, templates))
        self.n_templates = len(templates)
        with torch.no_grad():
            self.embeddings = class_text_embeddings(model, self.tokens, self.n_templates)
