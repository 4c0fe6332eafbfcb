"""`python -m segpcl ...` (what `torchrun --nproc-per-node N -m segpcl train ...` runs in every process)."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="segpcl")
