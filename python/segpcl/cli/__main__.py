"""`python -m segpcl.cli ...`, the same as `python -m segpcl ...`."""

from . import main

if __name__ == "__main__":
    main(prog_name="segpcl")
