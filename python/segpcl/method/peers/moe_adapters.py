"""MoE-Adapters4CL: "Boosting Continual Learning of Vision-Language Models via Mixture-of-Experts Adapters" (Yu et
al., CVPR 2024), class-incremental setting, as its public code does it (github.com/JiazuoYu/MoE-Adapters4CL at
4572d97: cil/clip/model.py, cil/clip/adapter.py, cil/continual_clip/models.py, cil/configs/class/*.yaml).

- Every residual block of both CLIP towers gets `moe_experts` (2) bottleneck adapters and one router. An adapter
  is down (d -> 64, bias zero, kaiming-uniform weight), ReLU, dropout 0.1 while training, up (64 -> d, weight and
  bias zero), times 0.1. The block becomes x + attn(ln_1(x)) -> x + mlp(ln_2(x)) + sum_e g_e adapter_e(x): the
  adapters read the residual stream x itself (no layer norm, adapter_layernorm_option "none"), beside the MLP
  branch. At initialisation every up-projection is zero, so the model is frozen CLIP exactly.
- Router (noisy top-k, Shazeer et al. 2017): logits = x_0 W_g on the block's token 0 (both towers), plus while
  training N(0, 1) (softplus(x_0 W_n) + 0.01) noise; g = softmax over the `moe_top_k` (2) largest logits, 0
  elsewhere. W_g and W_n start at zero.
- Only the adapters and routers train (both towers frozen, LoRA none): cross-entropy of s cos(f, T_c) over the
  current task's classes (text through the adapted text tower), AdamW lr 1e-3, weight decay 0, one epoch, 30
  warm-up steps then cosine (`train.warmup_steps`), no clipping, no label smoothing (configs `ls: 0.0`).
- Inference: s cos(f, T) over every seen class with the adapted towers, the router without noise.

Where this differs from the code, and why:
- Evaluation without router noise. ResidualAttentionBlock copies the module-level `global_is_train` (True at
  import) into `self.is_train` when it is built, and forward passes that copy, so the code adds the noise at
  evaluation too although CLIP.forward is called with is_train=False there and noisy_top_k_gating's docstring
  says noise is for training only. Here it follows the flag: random predictions would make `segpcl eval` differ
  from the run's own numbers.
- Dense mixture: every expert runs on every sample and its output is weighted by its gate (0 for the
  unselected), where the code dispatches each sample to its top-k experts only; the same output and gradients.
  With the class-incremental configuration (2 experts, top 2) every expert is selected anyway.
- Where the adapters sit: segpcl keeps open_clip's blocks and hooks them (a pre-hook on ln_2 reads x, a hook on
  the block adds the mixture); the model's own weights and state-dict keys are untouched.
- The code's training loop runs one step more than the epoch has batches (the first batch of a reshuffled pass).
  Past the warm-up its learning rate is the cosine's end, 0, and it changes nothing; in a task of fewer than 30
  steps it is a real update, left out here.
- Left out as they never reach the loss or the prediction: the load-balancing quantities (`importance`,
  `load`) and the expert-choice counters. The distribution-discriminative auto-selector (DDAS) and the
  per-task routers are the multi-domain (MTCL, mtil/) setting's; the class-incremental code has one router per
  block (router_list index 0) and no selector.
- Prompt: the configs' "a bad photo of a {}."; the preset's `data.templates: single` is segpcl's single prompt,
  "a good photo of a {}." (a templates file gives theirs word for word).

Export (`segpcl export`): model.safetensors is frozen CLIP; method.safetensors holds, for block i of tower
`visual`/`text` (the open_clip ResidualAttentionBlocks in module order), `<tower>.<i>.down_weight` [E, r, d],
`down_bias` [E, r], `up_weight` [E, d, r], `up_bias` [E, d], `router` [d, E], `noise` [d, E]; predict adds to
the block's output scale * sum_e g_e (relu(x W_d[e]^T + b_d[e]) W_u[e]^T + b_u[e]), g from `router` without
noise (`noise` only acts in training), scale = method.moe_scale (MODEL_CARD.md's config).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...config import MethodSection
from ...errors import ConfigError
from ...models.text import class_text_embeddings
from ..base import ContinualMethod, Needs

NOISE_EPSILON = 1e-2
"""Added to the softplus of the router's noise logits (model.py noisy_top_k_gating's noise_epsilon)."""


def noisy_top_k_gates(
    x0: torch.Tensor, w_gate: torch.Tensor, w_noise: torch.Tensor, k: int, noisy: bool
) -> torch.Tensor:
    """Gates [N, E] of tokens x0 [N, d]: softmax over the k largest of x0 W_g (+ N(0, 1) (softplus(x0 W_n) +
    0.01) when `noisy`, from torch's global generator), 0 for the other experts."""
    x0 = x0.to(torch.promote_types(x0.dtype, torch.float32))
    with torch.autocast(x0.device.type, enabled=False):  # in fp32 at least, as the code's: bf16 would tie logits
        logits = x0 @ w_gate.to(x0.dtype)
        if noisy:
            std = F.softplus(x0 @ w_noise.to(x0.dtype)) + NOISE_EPSILON
            logits = logits + torch.randn_like(logits) * std
        top, idx = logits.topk(k, dim=1)
        return torch.zeros_like(logits).scatter(1, idx, F.softmax(top, dim=1))


def mix_experts(x: torch.Tensor, gates: torch.Tensor, experts: BlockExperts, dropout: float) -> torch.Tensor:
    """sum_e gates[n, e] adapter_e(x[n]) for x [N, L, d] (no scale): every expert's down-projection as one matmul,
    the gates applied to the bottleneck, every up-projection as one matmul."""
    n, length, d = x.shape
    e, r, _ = experts.down_weight.shape
    h = F.relu(x @ experts.down_weight.reshape(e * r, d).T.to(x.dtype) + experts.down_bias.reshape(-1).to(x.dtype))
    h = F.dropout(h, dropout, training=dropout > 0)
    h = (h.view(n, length, e, r) * gates[:, None, :, None].to(h.dtype)).reshape(n, length, e * r)
    up = experts.up_weight.transpose(1, 2).reshape(e * r, d)  # row e*r + j: expert e's up column j
    return h @ up.to(h.dtype) + (gates @ experts.up_bias.to(gates.dtype))[:, None, :].to(h.dtype)


class BlockExperts(nn.Module):
    """The adapters and router of one residual block, and the two hooks that put them into it."""

    def __init__(self, width: int, cfg: MethodSection, batch_first: bool, generator: torch.Generator):
        super().__init__()
        e, r = cfg.moe_experts, cfg.moe_bottleneck
        # nn.Linear's kaiming_uniform_(a=sqrt(5)) is U(-1/sqrt(fan_in), 1/sqrt(fan_in)); from the run's seed
        bound = 1 / math.sqrt(width)
        self.down_weight = nn.Parameter((torch.rand(e, r, width, generator=generator) * 2 - 1) * bound)
        self.down_bias = nn.Parameter(torch.zeros(e, r))
        self.up_weight = nn.Parameter(torch.zeros(e, width, r))
        self.up_bias = nn.Parameter(torch.zeros(e, width))
        self.router = nn.Parameter(torch.zeros(width, e))
        self.noise = nn.Parameter(torch.zeros(width, e))
        self.top_k, self.scale = cfg.moe_top_k, cfg.moe_scale
        self.dropout, self.noisy = cfg.moe_dropout, cfg.moe_noisy_gating
        self.batch_first = batch_first
        self._x: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        """The mixture [N, L, d] of the residual stream x [N, L, d], routed by its token 0."""
        gates = noisy_top_k_gates(x[:, 0], self.router, self.noise, self.top_k, self.noisy and training)
        return self.scale * mix_experts(x, gates, self, self.dropout if training else 0.0)

    def read_stream(self, ln_2: nn.Module, args: tuple) -> None:
        """Forward pre-hook of the block's ln_2: keep x, the stream the MLP branch normalises."""
        self._x = args[0]

    def add_mixture(self, block: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        """Forward hook of the block: its output plus the mixture of x (training or not: the block's mode)."""
        x, self._x = self._x, None  # nothing kept between calls (a model copy must not hold a graph)
        if self.batch_first:
            return out + self(x, block.training).to(out.dtype)
        return out + self(x.transpose(0, 1), block.training).transpose(0, 1).to(out.dtype)


def tower_blocks(clip: nn.Module) -> dict[str, list[nn.Module]]:
    """open_clip's residual blocks of each tower, in module order; a ConfigError for a tower without any."""
    from open_clip.transformer import ResidualAttentionBlock

    text = clip.text if hasattr(clip, "text") else getattr(clip, "transformer", None)
    out = {}
    for tower, root in (("visual", clip.visual), ("text", text)):
        out[tower] = [m for m in root.modules() if isinstance(m, ResidualAttentionBlock)] if root is not None else []
        if not out[tower]:
            raise ConfigError(
                f"moe-adapters puts its experts into open_clip's transformer blocks, and this model's {tower} tower "
                f"({type(root).__name__}) has none; use a ViT CLIP (e.g. --set model.arch=ViT-B-16)"
            )
    return out


def insert_experts(clip: nn.Module, cfg: MethodSection, generator: torch.Generator) -> nn.ModuleDict:
    """Fresh experts in every block of both towers, hooked in (replacing any a method built before on this model);
    returned as {tower: [BlockExperts per block]}, not registered in the model."""
    towers = nn.ModuleDict()
    for tower, blocks in tower_blocks(clip).items():
        towers[tower] = nn.ModuleList()
        for block in blocks:
            for handle in getattr(block, "_moe_hooks", ()):
                handle.remove()
            width = block.ln_2.normalized_shape[-1]
            experts = BlockExperts(width, cfg, getattr(block.attn, "batch_first", True), generator)
            block._moe_hooks = (
                block.ln_2.register_forward_pre_hook(experts.read_stream),
                block.register_forward_hook(experts.add_mixture),
            )
            towers[tower].append(experts)
    return towers


class MoEAdapters(ContinualMethod):
    """MoE-Adapters4CL (see the module docs): routed bottleneck adapters in every block of frozen CLIP."""

    NEEDS = Needs(lora=False, epochs=True)

    def __init__(self, *args, **kwargs):
        """The arguments of ContinualMethod."""
        super().__init__(*args, **kwargs)
        self.model.requires_grad_(False)  # both towers frozen: only the adapters and routers train
        gen = torch.Generator().manual_seed(torch.initial_seed())
        self.experts = insert_experts(self.model.base, self.cfg, gen)
        self.experts.to(self.device)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.experts.parameters())

    def student_text(self, n_classes: int) -> torch.Tensor:
        """The seen classes' embeddings through the adapted text tower (never cached: its experts train)."""
        return self.class_text(self.model, n_classes)

    def training_loss(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Cross-entropy over the current task's classes."""
        n_old, k = self.n_old(), self.n_templates
        with self.autocast():
            text = class_text_embeddings(self.model, self.tokens[n_old * k : self.n_seen() * k], k)
            feats = self.model.image_features(images)
        logits = self.model.logit_scale() * feats.float() @ text.float().T
        ce = F.cross_entropy(logits, labels - n_old)
        return ce, {"ce": ce.detach()}

    @property
    def predicts_by_clip(self) -> bool:
        return True  # one inference (CLIP's, through the experts): its "clip" branch is itself

    # -- checkpoints ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {**super().state_dict(), "tensors": self.export_tensors()}

    def export_tensors(self) -> dict[str, torch.Tensor]:
        """Every adapter and router: how predict uses them is in the module docs."""
        return {name: value.detach() for name, value in self.experts.state_dict().items()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        tensors = state.get("tensors") or {}
        want = self.experts.state_dict()
        if set(tensors) != set(want):
            missing = sorted(set(want) - set(tensors)) or sorted(set(tensors) - set(want))
            raise ValueError(f"the checkpoint's MoE adapters do not match this model's blocks ({missing[0]}, ...)")
        self.experts.load_state_dict({k: v.to(self.device) for k, v in tensors.items()})
