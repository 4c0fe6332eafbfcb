"""`segpcl toy pretrain`: rebuild the toy world's shipped CLIP weights."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("toy")
def toy_group():
    """The embedded toy world's CLIP."""


@toy_group.command("pretrain")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    show_default="the package's segpcl/weights/toy-clip.safetensors",
    help="Where to write the compact weights file.",
)
@click.option("--quiet", is_flag=True, default=False, help="No progress bar.")
def toy_pretrain(out, quiet):
    """Pretrain the toy CLIP from its recipe (about 3 minutes on 2 CPU cores) and write the weights file that
    ships with the package (and the user cache)."""
    import os

    from safetensors.torch import save_file

    from ..environment import cache_dir
    from ..models.toy.clip import ToyPretrainRecipe, pretrain_toy_clip, recipe_hash
    from ..models.toy.weights import SHIPPED, save_shipped, shipped_metadata

    recipe = ToyPretrainRecipe()
    model = pretrain_toy_clip(recipe, progress=not quiet)
    path = save_shipped(model, recipe, out or SHIPPED)
    cached = cache_dir() / f"toy-clip-{recipe_hash(recipe)}.safetensors"
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{cached.name}.tmp{os.getpid()}")
    save_file({k: v.contiguous() for k, v in model.open_clip_state_dict().items()}, str(tmp))
    os.replace(tmp, cached)
    meta = shipped_metadata(path) or {}
    click.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, recipe {meta.get('recipe_hash')}) and {cached}")
