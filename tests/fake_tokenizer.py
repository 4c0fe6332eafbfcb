"""A stand-in for a Hugging Face hub tokenizer (SigLIP's), built in code with `tokenizers` and saved as a local
folder, so tests never download one: a word-level vocabulary of the toy world's words and the prompt words."""

from pathlib import Path

from segpcl.toyworld import CLASS_NAMES, SIZES


def write_stand_in_tokenizer(folder: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for name in CLASS_NAMES for w in name.split()} | set(SIZES))
    words += ["a", "an", "the", "photo", "of", "picture", "drawing", "shape", "image", "this", "is"]
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="</s>")
    fast.save_pretrained(str(folder))
    return folder
