"""segpcl: exemplar-free continual learning of CLIP models with SeGP-CL."""

__version__ = "0.1.0"
