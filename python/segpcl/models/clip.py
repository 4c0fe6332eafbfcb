"""`ClipModel`: an open_clip CLIP with its pixel normalisation and tokenizer, taking images in [0, 1].

Keeping normalisation inside the model lets PGD work (and clamp) in pixel space. Embeddings returned by
`image_features`/`text_features` are L2-normalised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipModel(nn.Module):
    def __init__(self, clip: nn.Module, tokenizer, image_size: int, mean=OPENAI_MEAN, std=OPENAI_STD):
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def base(self) -> nn.Module:
        """The underlying open_clip model, unwrapped from peft if LoRA is applied."""
        clip = self.clip
        return clip.get_base_model() if hasattr(clip, "get_base_model") else clip

    @property
    def embed_dim(self) -> int:
        return int(self.base.text_projection.shape[1]) if hasattr(self.base, "text_projection") else 0

    def logit_scale(self) -> torch.Tensor:
        return self.base.logit_scale.exp().clamp(max=100.0)

    def image_features(self, images01: torch.Tensor) -> torch.Tensor:
        x = (images01 - self.pixel_mean.to(images01.dtype)) / self.pixel_std.to(images01.dtype)
        return F.normalize(self.base.encode_image(x).float(), dim=-1)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts).to(self.pixel_mean.device)

    def text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.base.encode_text(tokens).float(), dim=-1)
