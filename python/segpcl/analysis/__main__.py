"""`python -m segpcl.analysis DIR...`: the drift diagnostic of runs (or an ablation folder) over seeds."""

from .drift import main

raise SystemExit(main())
