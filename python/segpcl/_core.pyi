"""Typed stub of ``segpcl._core``, the native (Rust) core of segpcl.

Conventions of every function and method here:

- Array arguments may be any numpy array or array-like. Float arguments are converted to float32
  (from any float or integer dtype), id arguments to int64 (from any integer dtype that converts
  safely: uint64, floats and bools are refused). Arrays that are already C-contiguous float32 /
  int64 are used without a copy.
- Invalid input raises ``ValueError`` with a message naming the argument and the expected shape:
  a wrong rank or shape, a dtype that cannot be converted, a NaN or infinite value, a negative class
  id, an out-of-range parameter. Nothing is changed when an error is raised.
- The numeric work runs with the GIL released. Large inputs are split over worker threads:
  ``SEGPCL_NUM_THREADS`` (an integer >= 1, read at each call) sets their number, default: all cores.
"""

from collections.abc import Mapping
from typing import Literal

import numpy as np
import numpy.typing as npt

__version__: str
"""Version of the native crate (segpcl-core)."""

def build_info() -> dict[str, str]:
    """How this extension was built.

    Returns ``{"version": crate version, "profile": "release" or "debug"}``.
    """

def select_key_edges(
    sim: npt.ArrayLike, k: int | None, threshold: float | None = None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Select the key relation edges (TSGR subgraph) of a class-similarity matrix.

    The matrix ``sim`` (float32 [C, C]) is first symmetrised: ``s[i, j] = sim[i, j]`` where
    ``sim[i, j] == sim[j, i]``, else ``0.5 * sim[i, j] + 0.5 * sim[j, i]`` computed in float32. For a
    symmetric matrix ``s`` is exactly ``sim``; for an asymmetric one the ranking, the threshold and
    the weights all use ``s``, so the result is well defined.

    - k-nearest part: for every node, its ``min(k, C - 1)`` most similar *other* nodes (never
      itself), ties broken toward the lower index; ``k >= C - 1`` selects all pairs.
    - threshold part (when ``threshold`` is given): every pair with ``s[i, j] >= threshold``,
      compared exactly (in float64). ``k=None`` with a threshold selects by threshold only.

    The union of both parts is returned undirected, each edge once as ``(i, j)`` with ``i < j``,
    sorted by ``(i, j)``. ``C = 1`` (or 0) gives no edges.

    Args:
        sim: similarity matrix, float32 [C, C], finite.
        k: neighbours per node, >= 1, or None for threshold-only selection.
        threshold: optional similarity threshold (not NaN).

    Returns:
        ``(edges, weights)``: edges int64 [E, 2], weights float32 [E] with ``weights[e] = s[i, j]``.

    Raises:
        ValueError: sim not square / not 2-D / not finite, ``k < 1``, ``k`` and ``threshold`` both
            None, or a NaN threshold.
    """

def select_neighbors(sim: npt.ArrayLike, roots: npt.ArrayLike, k: int) -> npt.NDArray[np.int64]:
    """Rooted neighbourhoods (TSGR's rooted mode) of a class-similarity matrix.

    For each root ``r`` (in the given order; repeats allowed), the ``min(k, C - 1)`` columns
    ``j != r`` with the largest ``sim[r, j]``, best first, ties toward the lower ``j``. Only the roots'
    rows are read, as given (no symmetrisation).

    Args:
        sim: float32 [C, C], finite.
        roots: int64 [R], row indices in ``[0, C)``.
        k: neighbours per root, >= 1 (``k >= C - 1`` takes every other class).

    Returns:
        int64 [R, min(k, C - 1)].
    """

class PrototypeBank:
    """Streaming per-class prototypes (feature means) with anchor-induced migration.

    Per class the bank stores a feature sum (float64) and a sample count; the prototype is
    ``sum / count``. Writing a mean (:meth:`set_means`, :meth:`migrate`) stores
    ``sum = mean * count``, so :meth:`means` returns exactly what was written and a later
    :meth:`update` combines that mean, weighted by its count, with the new samples. Class ids are
    integers >= 0 and may appear in any order at any time.

    The bank is not picklable; checkpoint it with :meth:`state_dict` / :meth:`from_state`. One bank
    is not for concurrent use: a call made while another thread's :meth:`update`, :meth:`set_means`
    or :meth:`migrate` on the same bank runs raises ``RuntimeError`` ("Already mutably borrowed").
    """

    def __init__(self, dim: int) -> None:
        """An empty bank for ``dim``-dimensional features (``dim >= 1``)."""

    @property
    def dim(self) -> int:
        """Feature dimension."""

    def update(self, features: npt.ArrayLike, labels: npt.ArrayLike) -> None:
        """Add samples to the per-class sums and counts.

        Args:
            features: float32 [N, dim], finite.
            labels: int64 [N], class ids >= 0 (new ids create classes).
        """

    def add_sums(self, class_ids: npt.ArrayLike, sums: npt.ArrayLike, counts: npt.ArrayLike) -> None:
        """Add per-class feature sums and sample counts (e.g. another process's shard, from its
        :meth:`state_dict`): the same as :meth:`update` with those samples, up to float rounding.

        Args:
            class_ids: int64 [K], unique, >= 0 (new ids create classes).
            sums: float64 [K, dim], finite.
            counts: int64 [K], >= 0 (a class with count 0 is left unchanged).
        """

    def means(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """``(class_ids int64 [C], prototypes float32 [C, dim])``, ids ascending."""

    def counts(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """``(class_ids int64 [C], counts int64 [C])``, ids ascending."""

    def set_means(self, class_ids: npt.ArrayLike, prototypes: npt.ArrayLike) -> None:
        """Overwrite (or create) the prototypes of ``class_ids``.

        A stored class keeps its count; a new class gets count 1.

        Args:
            class_ids: int64 [K], ids >= 0, no repeats.
            prototypes: float32 [K, dim], finite.
        """

    def migrate(
        self,
        before: npt.ArrayLike,
        after: npt.ArrayLike,
        sigma: float,
        mode: Literal["gaussian", "proximity", "target"] = "gaussian",
        anchor_targets: npt.ArrayLike | None = None,
        classes: npt.ArrayLike | None = None,
    ) -> npt.NDArray[np.float32]:
        """Move stored prototypes by the anchor drift ``d_a = after_a - before_a``.

        - ``mode="gaussian"``: prototype ``P_c`` moves by ``sum_a w_ac d_a / sum_a w_ac`` with
          ``w_ac = exp(-||before_a - P_c||^2 / (2 sigma^2))``. The weights are computed stably (the
          largest log-weight of each class is subtracted, so anchors far from every prototype still
          give a finite weighted mean) in float64; the squared distances (expanded as
          ``||P||^2 + ||b||^2 - 2 P.b`` after centring on the mean anchor) and the weighted sum of
          drifts use float32 matrix products.
        - ``mode="proximity"``: the ``"gaussian"`` shift scaled by ``max_a w_ac``, the kernel value of
          the nearest anchor, so a class far from every anchor moves little.
        - ``mode="target"``: prototype ``P_c`` moves by the mean drift of the anchors whose
          ``anchor_targets`` equals ``c``; a class without such anchors does not move.

        Zero anchors (A = 0) move nothing. The moved means become ``mean + shift``.

        Args:
            before: anchor features before training (teacher), float32 [A, dim], finite.
            after: anchor features after training (student), float32 [A, dim], finite.
            sigma: Gaussian bandwidth, finite and > 0 (checked in both modes).
            mode: ``"gaussian"``, ``"proximity"`` or ``"target"``.
            anchor_targets: int64 [A] target class of each anchor; required for ``"target"``,
                ignored otherwise.
            classes: int64 [K] ids of the classes to move, each stored and none repeated;
                default: every stored class.

        Returns:
            The applied shifts, float32 [K, dim]: in the order of ``classes`` when given, else in
            ascending class id order (the order of :meth:`means`).
        """

    def state_dict(self) -> dict[str, npt.NDArray[np.generic]]:
        """Plain numpy state for checkpoints (no pickled Rust objects).

        Keys: ``"dim"`` (int64, 0-d), ``"class_ids"`` (int64 [C], ascending), ``"sums"``
        (float64 [C, dim]), ``"counts"`` (int64 [C]).
        """

    @staticmethod
    def from_state(state: Mapping[str, npt.ArrayLike]) -> PrototypeBank:
        """Rebuild a bank from :meth:`state_dict`'s output (any mapping with the same keys).

        Raises:
            ValueError: a key is missing, shapes disagree, a count is < 1, an id repeats or is
                negative, or a sum is not finite.
        """

    def __len__(self) -> int:
        """Number of stored classes."""

    def __contains__(self, class_id: object) -> bool:
        """Whether ``class_id`` (an integer) is a stored class."""

    def __repr__(self) -> str:
        """``PrototypeBank(dim=..., classes=...)``."""

class ClassScatter:
    """Streaming per-class means and covariances (RAPF's class statistics).

    Per class it stores, in float64, the feature sum ``s``, the sum of outer products
    ``S = sum_i x_i x_i^T`` and the sample count ``n``; :meth:`statistics` gives ``mean = s / n`` and
    the unbiased covariance ``(S - n mean mean^T) / (n - 1)`` (zero for a class of one sample).
    Shards merge by addition (:meth:`add` of another accumulator's :meth:`state_dict`), which is how
    several processes combine their statistics. Each class costs ``dim * dim`` float64 values.

    Not picklable; not for concurrent use (as :class:`PrototypeBank`).
    """

    def __init__(self, dim: int) -> None:
        """An empty accumulator for ``dim``-dimensional features (``dim >= 1``)."""

    @property
    def dim(self) -> int:
        """Feature dimension."""

    def update(self, features: npt.ArrayLike, labels: npt.ArrayLike) -> None:
        """Add samples to the per-class sums, scatters and counts.

        Args:
            features: float32 [N, dim], finite.
            labels: int64 [N], class ids >= 0 (new ids create classes).
        """

    def add(
        self, class_ids: npt.ArrayLike, sums: npt.ArrayLike, scatters: npt.ArrayLike, counts: npt.ArrayLike
    ) -> None:
        """Add per-class sums, scatters and counts (e.g. another process's :meth:`state_dict`): the
        same as :meth:`update` with those samples, up to float rounding.

        Args:
            class_ids: int64 [K], unique, >= 0 (new ids create classes).
            sums: float64 [K, dim], finite.
            scatters: float64 [K, dim, dim], finite.
            counts: int64 [K], >= 0 (a class with count 0 is left unchanged).
        """

    def statistics(
        self,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """``(class_ids int64 [C], means float64 [C, dim], covariances float64 [C, dim, dim], counts
        int64 [C])``, ids ascending; each covariance is unbiased and exactly symmetric."""

    def state_dict(self) -> dict[str, npt.NDArray[np.generic]]:
        """Plain numpy state: ``"dim"`` (int64, 0-d), ``"class_ids"`` (int64 [C], ascending),
        ``"sums"`` (float64 [C, dim]), ``"scatters"`` (float64 [C, dim, dim]), ``"counts"``
        (int64 [C])."""

    @staticmethod
    def from_state(state: Mapping[str, npt.ArrayLike]) -> ClassScatter:
        """Rebuild an accumulator from :meth:`state_dict`'s output (any mapping with the same keys).

        Raises:
            ValueError: a key is missing, shapes disagree, a count is < 1, an id repeats or is
                negative, or a value is not finite.
        """

    def __len__(self) -> int:
        """Number of stored classes."""

    def __contains__(self, class_id: object) -> bool:
        """Whether ``class_id`` (an integer) is a stored class."""

    def __repr__(self) -> str:
        """``ClassScatter(dim=..., classes=...)``."""
