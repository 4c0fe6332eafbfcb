"""The text tokenizer of a model, never from the network.

Most open_clip models use open_clip's built-in BPE tokenizer. Some name a Hugging Face hub tokenizer in their
config (`text_cfg.hf_tokenizer_name`: SigLIP, SigLIP2, CLIPA, the worldwide models), which open_clip would fetch
at start. segpcl looks for it, in order: the folder given as `model.tokenizer` (`--tokenizer DIR`), the folder of
the `--pretrained` file when it holds tokenizer files, then the local HF cache (offline); else it stops with one
line saying what to pass.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model", "vocab.txt")


def _has_tokenizer(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).is_file() for name in TOKENIZER_FILES)


def _hf(source: str, text_cfg: dict, **kwargs):
    from open_clip.tokenizer import HFTokenizer

    return HFTokenizer(
        source,
        context_length=text_cfg.get("context_length", 77),
        tokenizer_mode=text_cfg.get("tokenizer_mode"),
        **text_cfg.get("tokenizer_kwargs", {}),
        **kwargs,
    )


def load_tokenizer(arch: str, text_cfg: dict, folder: str | None = None, pretrained: str | None = None):
    """The tokenizer of `arch` (`text_cfg`: its open_clip text config); ConfigError when a hub tokenizer is in
    none of the places above."""
    from open_clip.tokenizer import SimpleTokenizer

    hub_name = text_cfg.get("hf_tokenizer_name")
    if not hub_name:
        if folder is not None:
            raise ConfigError(
                f"{arch} uses open_clip's built-in tokenizer; --tokenizer / model.tokenizer is only for models whose "
                "tokenizer comes from the Hugging Face hub (e.g. SigLIP): drop it"
            )
        return SimpleTokenizer(context_length=text_cfg.get("context_length", 77))
    if folder is not None:
        if not _has_tokenizer(Path(folder)):
            raise ConfigError(
                f"tokenizer folder {folder} holds none of {', '.join(TOKENIZER_FILES)}; pass the folder of "
                f"{hub_name}'s tokenizer files"
            )
        return _hf(str(folder), text_cfg)
    beside = Path(pretrained).parent if pretrained else None
    if beside is not None and _has_tokenizer(beside):
        return _hf(str(beside), text_cfg)
    try:
        return _hf(hub_name, text_cfg, local_files_only=True)
    except Exception:
        raise ConfigError(
            f"{arch} needs the tokenizer {hub_name} from the Hugging Face hub, which is not in the local HF cache "
            f"and segpcl never downloads: pass --tokenizer DIR (or --set model.tokenizer=DIR), a folder with its "
            f"files (e.g. `huggingface-cli download {hub_name} --local-dir DIR` on a machine with network), or put "
            "them beside the --pretrained file"
        ) from None
