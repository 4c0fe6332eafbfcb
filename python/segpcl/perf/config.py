"""The settings of `segpcl bench overhead` (OverheadConfig) and their check."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

# A typical task: CIFAR-100 in 10 tasks has 10 classes x 500 training images; the paper trains 10 epochs.
DEFAULT_IMAGES_PER_TASK = 5000
DEFAULT_EPOCHS = 10
DEFAULT_BATCH_SIZE = 128


@dataclass
class OverheadConfig:
    arch: str = "tiny"
    """tiny, toy-clip, or any open_clip architecture (random weights unless `pretrained`)."""
    pretrained: str | None = None
    """Local weights file (or offline open_clip tag); None: random weights, fine for costs."""
    device: str = "cpu"
    precision: str = "fp32"
    """fp32, or bf16 autocast (CUDA), as in training."""
    batch_size: int = DEFAULT_BATCH_SIZE
    """New-task images per training step (B; paper: 128)."""
    anchors_per_step: int | None = None
    """Anchors per step (A); None: MethodSection's default, i.e. what training uses."""
    classes: int = 100
    """Seen classes C at the measured task."""
    increment: int = 10
    """New classes of the measured task (old classes = C - increment)."""
    templates: int = 6
    """Prompt templates per class (CIFAR-100's ensemble has 6); the text tower runs C x templates prompts."""
    repeats: int = 10
    """Timed repeats of every interleaved measurement (medians are reported)."""
    warmup: int = 2
    """Untimed rounds before the timed repeats."""
    steps_per_repeat: int = 1
    """Training steps per timed block."""
    images_per_task: int = DEFAULT_IMAGES_PER_TASK
    """Training images of the task (DPGD scans all of them for seeds; after_task reads them once)."""
    epochs: int = DEFAULT_EPOCHS
    """Epochs per task, for the default task_steps."""
    task_steps: int | None = None
    """Training steps of a typical task; None: epochs x ceil(images_per_task / batch_size)."""
    k_seed: int | None = None
    """Anchors built per task; None: MethodSection's default."""
    pgd_steps: int | None = None
    """PGD iterations; None: MethodSection's default."""
    anchor_repeats: int = 2
    """Timed before_task / after_task calls (after one untimed call)."""
    eval_batch_size: int = 256
    """Images per inference call (and per batch of the task scans)."""
    sweep_anchors: tuple[int, ...] = ()
    """Also measure the step ratio at these anchors-per-step values (same interleaved loop)."""
    lora_towers: tuple[str, ...] = ("visual", "text")
    """Towers with LoRA (as lora.towers). Without the text tower, text embeddings are cached and TSGR is off."""
    profile: bool = False
    """Add a torch.profiler table (top operators) of one LoRA step and one SeGP-CL step."""
    threads: int | None = None
    """torch CPU threads (None: torch's default)."""
    memory: bool = True
    """Also measure the peak memory of a SeGP-CL step with and without gradient checkpointing (perf/memory.py;
    on a CPU each setting runs in a child process)."""
    tokenizer: str | None = None
    """Local tokenizer folder, for models whose tokenizer comes from a hub (as model.tokenizer)."""
    seed: int = 0


def check_config(cfg: OverheadConfig) -> None:
    positive = ["batch_size", "classes", "increment", "templates", "repeats", "steps_per_repeat",
                "images_per_task", "epochs", "anchor_repeats", "eval_batch_size"]  # fmt: skip
    for name in positive:
        if getattr(cfg, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    if cfg.warmup < 0:
        raise ConfigError(f"--warmup must be >= 0, got {cfg.warmup}")
    if cfg.increment >= cfg.classes:
        raise ConfigError(
            f"--classes ({cfg.classes}) must exceed --increment ({cfg.increment}): the measured task needs old classes"
        )
    for a in [cfg.anchors_per_step, *cfg.sweep_anchors]:
        if a is not None and a < 1:
            raise ConfigError(f"anchors per step must be at least 1, got {a} (A = 0 is plain LoRA + TSGR)")
    if not cfg.lora_towers or set(cfg.lora_towers) - {"visual", "text"}:
        raise ConfigError(f"--lora-towers must be visual, text or both, got {','.join(cfg.lora_towers)}")
    if cfg.task_steps is not None and cfg.task_steps < 1:
        raise ConfigError(f"--task-steps must be at least 1, got {cfg.task_steps}")
