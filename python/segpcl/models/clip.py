"""`ClipModel`: an open_clip CLIP with its pixel normalisation and tokenizer, taking images in [0, 1].

Keeping normalisation inside the model lets PGD work (and clamp) in pixel space. Embeddings returned by
`image_features`/`text_features` are L2-normalised; `image_features_and_raw` also returns the visual tower's
pooled output before the projection (the "raw" visual space of the paper's prototypes) from the same forward;
what that is for each tower family is in families.py. open_clip's nn.MultiheadAttention layers (and a ResNet's
attention pool) are replaced by modules with plain Linear projections (same outputs; see attention.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import linearize_attention, open_clip_keys
from .families import raw_and_embedding, raw_dim, sigmoid_trained, visual_family

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipModel(nn.Module):
    def __init__(
        self, clip: nn.Module, tokenizer, image_size: int, mean=OPENAI_MEAN, std=OPENAI_STD, linearize: bool = True
    ):
        """linearize=False keeps open_clip's nn.MultiheadAttention (the toy CLIP's pretraining recipe, which made
        the shipped weights through it: same function, other float rounding)."""
        super().__init__()
        if linearize:
            linearize_attention(clip)
        self.clip = clip
        self.visual_family = visual_family(clip)  # None: a tower segpcl has no row for (families.py)
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
        """Width of the joint embedding: CLIP's text projection, or a CustomTextCLIP text tower's output."""
        text = getattr(self.base, "text", None)  # CustomTextCLIP (SigLIP, EVA02, PE-Core, MobileCLIP)
        if text is not None:
            return int(text.output_dim)
        return int(self.base.text_projection.shape[1]) if hasattr(self.base, "text_projection") else 0

    def logit_scale(self) -> torch.Tensor:
        """s of the softmax over classes; capped at 100 for softmax-trained models only (families.py)."""
        scale = self.base.logit_scale.exp()
        return scale if sigmoid_trained(self.base) else scale.clamp(max=100.0)

    @property
    def raw_dim(self) -> int | None:
        """Width of the raw visual features (None: a tower without a known raw feature, see families.py)."""
        return raw_dim(self.base.visual, self.visual_family)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each transformer block in backward instead of keeping its activations (open_clip's and
        timm's own checkpointing; a ResNet tower has none and keeps its activations)."""
        self.base.set_grad_checkpointing(enable)

    def _normalise(self, images01: torch.Tensor) -> torch.Tensor:
        return (images01 - self.pixel_mean.to(images01.dtype)) / self.pixel_std.to(images01.dtype)

    def image_features(self, images01: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_embeddings(images01), dim=-1)

    def image_embeddings(self, images01: torch.Tensor) -> torch.Tensor:
        """The image embeddings before L2 normalisation (fp32): what RAPF adapts and keeps class statistics of."""
        return self.base.encode_image(self._normalise(images01)).float()

    def image_features_and_raw(self, images01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f, v) from one forward: f = normalize(the tower's projection of v) as open_clip computes it, v the
        pooled output before the projection (fp32 both)."""
        if self.raw_dim is None:
            raise ValueError("this visual tower has no known raw feature; use method.prototype_space=embed")
        # f from the returned v: DPGD differentiates at v
        raw, emb = raw_and_embedding(self.base.visual, self.visual_family, self._normalise(images01))
        return F.normalize(emb.float(), dim=-1), raw

    def open_clip_state_dict(self) -> dict[str, torch.Tensor]:
        """The wrapped model's weights in plain open_clip's key layout (LoRA must be merged or absent)."""
        return open_clip_keys(self.base.state_dict())

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts).to(self.pixel_mean.device)

    def text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.base.encode_text(tokens).float(), dim=-1)
