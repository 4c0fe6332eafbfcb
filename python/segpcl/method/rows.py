"""SeGP-CL's rows: which parts of the method each `--method` name switches on (the Learner reads this table),
and the names of the peer methods; plain Python, so the CLI can list methods without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

PEER_METHODS = ("rapf", "mgclip", "zscl", "zscl-lora", "moe-adapters")
"""The methods SeGP-CL is compared with (method/peers/; method/registry.py PEERS must match, tested)."""


@dataclass(frozen=True)
class Switches:
    """Which parts of SeGP-CL a method uses."""

    train: bool = True
    acgd: bool = False
    """KL over the old classes on the distillation source."""
    source: str = "anchors"
    """Distillation source: anchors (DPGD, or the seeds with method.anchors=seeds), seeds (no PGD), new (the
    new-task batch itself), ref (a reference image set, ZSCL-style), random (k_seed random new-task images per
    old class, no PGD: method/random_anchors.py)."""
    tsgr: bool = False
    transfer: bool = False
    """Anchor-induced prototype transfer after each task."""
    visual_branch: bool = False
    """Dual-path inference (the prototype branch fused with CLIP)."""
    ncm: bool = False
    """Prototype branch alone (nearest class mean by cosine)."""
    text_only_pgd: bool = False


METHODS: dict[str, Switches] = {
    "zeroshot": Switches(train=False),
    "ncm": Switches(train=False, ncm=True),
    "lora": Switches(),
    "lora+acgd": Switches(acgd=True),
    "lora+acgd+tsgr": Switches(acgd=True, tsgr=True),
    "lora+acgd+tsgr+pt": Switches(acgd=True, tsgr=True, transfer=True),
    "segpcl": Switches(acgd=True, tsgr=True, transfer=True, visual_branch=True),
    # the paper's "CLIP branch only" report of the full method: trained as segpcl, predicted by CLIP alone,
    # which is the same configuration as the +PT ablation row
    "segpcl-cliponly": Switches(acgd=True, tsgr=True, transfer=True),
    "segpcl-textpgd": Switches(acgd=True, tsgr=True, transfer=True, visual_branch=True, text_only_pgd=True),
    "lora+distill-new": Switches(acgd=True, source="new"),
    "lora+distill-seeds": Switches(acgd=True, source="seeds"),
    # the control for "does choosing the seeds matter": as many anchors per old class, drawn at random
    "lora+distill-randomclass": Switches(acgd=True, source="random"),
    "lora+distill-ref": Switches(acgd=True, source="ref"),
}


def method_switches(name: str) -> Switches:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[name]
