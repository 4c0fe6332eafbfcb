"""`segpcl export`: a run's model after one task, as files other tools read.

The folder holds
- `model.safetensors`: the LoRA merged into the weights, in plain open_clip's key layout, so
  `open_clip.create_model(arch)` + `load_state_dict` gives the adapted model (same image and text features);
- `adapter/`: the LoRA adapter in peft's format. Its module names are segpcl's Linear attention
  (`attn.in_proj`, `attn.out_proj`: models/attention.py replaces open_clip's nn.MultiheadAttention), so it loads
  with plain peft (`PeftModel.from_pretrained`) on a freshly built model linearised the same way
  (`segpcl.models.attention.linearize_attention(model)`), with the run's base weights;
- `prototypes.npz`: `prototypes` [C, d] (L2-normalised, the prototype branch's), `space` (raw or embed);
- `classes.json`: class names (in the order of the prototypes and of predict's columns), prompt templates and
  the inference settings (fusion, beta, prototype scale, logit scale);
- `MODEL_CARD.md`: benchmark, method, metrics after the task, the config.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np

from ..engine.checkpoint import RunDir
from ..engine.nofollow import atomic_write_bytes, atomic_write_text, make_dir
from ..errors import ConfigError
from .reopen import Reopened, reopen


def export_run(
    run_dir: str | Path, out: str | Path, task: int | None = None, data_root: str | Path | None = None
) -> dict[str, Path]:
    """Write the export folder `out` for the run after task `task` (1-based; default the last); returns the
    paths written, by kind."""
    from safetensors.torch import save

    from ..models.lora import frozen_teacher

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} exists and is not an empty folder; choose a new one")
    r = reopen(run_dir, task=task, device="cpu", data_root=data_root, need_data=False)
    make_dir(out)
    paths: dict[str, Path] = {}

    merged = frozen_teacher(r.model)
    state = {k: v.detach().contiguous().cpu() for k, v in merged.open_clip_state_dict().items()}
    paths["model"] = out / "model.safetensors"
    atomic_write_bytes(paths["model"], save(state, metadata={"arch": r.cfg.model.arch, "format": "open_clip"}))

    adapter = RunDir(r.root).task_dir(r.task) / "adapter"
    if adapter.is_dir():
        paths["adapter"] = out / "adapter"
        shutil.copytree(adapter, paths["adapter"])

    learner = r.learner
    n = learner.n_seen(r.task)
    names = list(r.stream.class_names[:n])
    if len(learner.prototypes):
        # a zero row: the class has no prototype and is scored by CLIP alone (segpcl.dual_path_probs)
        protos = learner.prototypes.matrix(n, device="cpu").float().numpy()
        paths["prototypes"] = out / "prototypes.npz"
        buffer = io.BytesIO()
        np.savez(buffer, prototypes=protos, space=np.array(learner.cfg.prototype_space))
        atomic_write_bytes(paths["prototypes"], buffer.getvalue())
    extra = learner.export_tensors()  # e.g. RAPF's linear adapter on the image embeddings
    if extra:
        paths["method"] = out / "method.safetensors"
        atomic_write_bytes(paths["method"], save({k: v.detach().contiguous().cpu() for k, v in extra.items()}))

    scale = float(r.model.logit_scale())
    m = learner.cfg
    info = {
        "arch": r.cfg.model.arch,
        "bench": r.cfg.data.bench,
        "method": m.name,
        "task": r.task + 1,
        "n_tasks": r.stream.n_tasks,
        "class_names": names,
        "templates": list(r.stream.bench.templates),
        "inference": {
            "branch": "dual" if getattr(learner, "prototype_inference", False) else "clip",  # SeGP-CL's rows
            "fusion": m.fusion,
            "beta": m.beta,
            "prototype_space": m.prototype_space,
            "logit_scale": scale,
            "proto_scale": m.proto_scale if m.proto_scale is not None else scale,
            "missing_prototype": "zero row in prototypes.npz; the class's prototype score is the image's mean "
            "prototype score over the classes that have one (segpcl.dual_path_probs)",
        },
    }
    if extra:
        where = f"{type(learner).__module__} (its module docs)"
        info["inference"]["method_tensors"] = f"method.safetensors ({', '.join(extra)}): how predict uses them: {where}"
    paths["classes"] = out / "classes.json"
    atomic_write_text(paths["classes"], json.dumps(info, indent=2))
    paths["card"] = out / "MODEL_CARD.md"
    atomic_write_text(paths["card"], _model_card(r, info))
    return paths


def _model_card(r: Reopened, info: dict) -> str:
    import yaml

    metrics = r.state.get("metrics", {})
    acc = metrics.get("acc") or []
    seen = metrics.get("seen_accuracy") or metrics.get("task_accuracy") or []
    row = acc[r.task] if r.task < len(acc) else []
    lines = [
        f"# {info['method']} on {info['bench']}, after task {info['task']} of {info['n_tasks']}",
        "",
        f"- architecture: `{info['arch']}` (open_clip), weights: `{r.cfg.model.pretrained or 'built-in'}`",
        f"- classes seen: {len(info['class_names'])}; inference: {info['inference']['branch']} path "
        f"(fusion {info['inference']['fusion']}, beta {info['inference']['beta']})",
    ]
    if seen:
        lines.append(f"- accuracy on all seen classes after this task: {seen[r.task]:.2f} %")
    if row:
        lines.append("- per task: " + ", ".join(f"{a:.2f}" for a in row))
    lines += [
        "",
        "## Files",
        "",
        "- `model.safetensors`: LoRA merged, open_clip keys: `open_clip.create_model(arch)` then "
        "`model.load_state_dict(safetensors.torch.load_file('model.safetensors'))`",
        "- `adapter/`: peft LoRA adapter; its modules are segpcl's Linear attention (`attn.in_proj`): apply "
        "`segpcl.models.attention.linearize_attention(model)` to a fresh open_clip model with the run's base "
        "weights, then `peft.PeftModel.from_pretrained(model, 'adapter')`",
        "- `prototypes.npz`, `classes.json`: the prototype branch and the class names / templates",
        *([f"- `method.safetensors`: {note}"] if (note := info["inference"].get("method_tensors")) else []),
        "",
        "## Config",
        "",
        "```yaml",
        yaml.safe_dump(r.cfg.to_dict(), sort_keys=False).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)
