"""Which points a law is fitted on (`--frontier`), chosen separately from the law itself.

A sweep holds many runs that are not compute-optimal (too small or too large a model for their
compute, repeated data); a law of error against compute describes the best error reachable at each
compute, so it should be fitted to the lower envelope of the points, not to all of them:

- `none`: every point.
- `cherti`: Cherti et al. 2023 (the paper's figures notebook): 5 equal-width bins of log10 C over
  [min, max + 0.1]; per non-empty bin its minimum error. A law of C alone gets that minimum at the bin
  centre (exactly the paper's method); a law of other inputs gets the run that has it.
- `pareto`: Nezhurina et al. 2025: geometric bins of C a factor `PARETO_BIN_FACTOR` wide; per bin the run
  with the minimum error, kept only while the error keeps decreasing with C (each kept run beats every
  kept run of lower compute).
- `hull`: the runs on the lower convex hull of (log C, log E), from the lowest to the highest compute.

`--frontier-bins N` (pareto, cherti) sets the bins by their N edges instead: for `pareto`, N geometric
edges from the smallest to the largest C (N - 1 bins, each [lo, hi)), the minimum of each bin kept
while decreasing, and the largest-C point kept if it is lower still: Nezhurina et al.'s `pareto_bin`,
which takes N = int(log2(C_max / 1500)) with C in GFLOPs. For `cherti`, N - 1 equal bins of log10 C.
"""

from __future__ import annotations

import itertools

import numpy as np

from clipscale.errors import ClipscaleError

FRONTIERS = ("none", "cherti", "pareto", "hull")
FRONTIER_BINS = 5
FRONTIER_EPS = 0.1
PARETO_BIN_FACTOR = 2.0


def check_frontier(name: str) -> str:
    if name not in FRONTIERS:
        raise ClipscaleError(f"--frontier {name!r}: expected one of {', '.join(FRONTIERS)}")
    return name


def cherti_bins(
    log10_c: np.ndarray, log10_e: np.ndarray, nbins: int = FRONTIER_BINS, eps: float = FRONTIER_EPS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bin centres, minimum log10 E and the row holding it, for each non-empty one of `nbins` equal bins of
    log10 C over [min, max + eps]."""
    edges = np.linspace(log10_c.min(), log10_c.max() + eps, nbins + 1)
    idx = np.clip(np.searchsorted(edges, log10_c, side="right") - 1, 0, nbins - 1)
    xs, ys, rows = [], [], []
    for i in range(nbins):
        sel = np.flatnonzero(idx == i)
        if sel.size:
            best = sel[np.argmin(log10_e[sel])]
            xs.append(0.5 * (edges[i] + edges[i + 1]))
            ys.append(log10_e[best])
            rows.append(best)
    return np.array(xs), np.array(ys), np.array(rows, int)


def frontier_points(
    log10_c: np.ndarray, log10_e: np.ndarray, nbins: int = FRONTIER_BINS, eps: float = FRONTIER_EPS
) -> tuple[np.ndarray, np.ndarray]:
    """The paper's frontier: bin centres and the minimum log10 E of each non-empty bin."""
    xs, ys, _ = cherti_bins(log10_c, log10_e, nbins, eps)
    return xs, ys


def pareto_rows(c: np.ndarray, e: np.ndarray, factor: float = PARETO_BIN_FACTOR) -> np.ndarray:
    """Rows of the binned Pareto frontier (increasing C)."""
    lc = np.log(c)
    width = np.log(factor)
    idx = np.floor((lc - lc.min()) / width).astype(int)
    best_so_far, rows = np.inf, []
    for b in np.unique(idx):
        sel = np.flatnonzero(idx == b)
        r = sel[np.argmin(e[sel])]
        if e[r] < best_so_far:
            rows.append(r)
            best_so_far = e[r]
    return np.array(rows, int)


def pareto_edge_rows(c: np.ndarray, e: np.ndarray, n_edges: int) -> np.ndarray:
    """Rows of the Pareto frontier over `n_edges` geometric bin edges from min C to max C (increasing C)."""
    edges = np.geomspace(c.min(), c.max(), n_edges)
    best_so_far, rows = np.inf, []
    for lo, hi in itertools.pairwise(edges):
        sel = np.flatnonzero((c >= lo) & (c < hi))
        if sel.size:
            r = sel[np.argmin(e[sel])]
            if e[r] < best_so_far:
                rows.append(r)
                best_so_far = e[r]
    top = np.flatnonzero(c == c.max())
    r = top[np.argmin(e[top])]
    if e[r] < best_so_far and r not in rows:
        rows.append(r)
    return np.array(rows, int)


def check_frontier_bins(frontier: str, bins: int | None) -> int | None:
    """`--frontier-bins` is for pareto and cherti and needs at least 2 edges (one bin)."""
    if bins is None:
        return None
    if frontier not in ("pareto", "cherti"):
        raise ClipscaleError(f"--frontier-bins is for --frontier pareto or cherti, not {frontier!r}")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ClipscaleError(f"--frontier-bins {bins!r}: expected an integer >= 2 (bin edges)")
    return bins


def hull_rows(c: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Rows on the lower convex hull of (log C, log E) (monotone chain; ties in C keep the lowest E)."""
    x, y = np.log(c), np.log(e)
    order = np.lexsort((y, x))
    hull: list[int] = []
    for i in order:
        if hull and x[hull[-1]] == x[i]:
            continue  # same C, higher E: above the lowest point of that C
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            cross = (x[b] - x[a]) * (y[i] - y[a]) - (y[b] - y[a]) * (x[i] - x[a])
            if cross > 0:
                break
            hull.pop()  # b lies on or above the chord a–i
        hull.append(int(i))
    return np.array(hull, int)


def frontier_rows(name: str, c: np.ndarray, e: np.ndarray, bins: int | None = None) -> np.ndarray:
    """Rows of `pareto`, `hull` or `cherti` (the row holding each bin's minimum); `bins`: bin edges."""
    if name == "pareto":
        return pareto_rows(c, e) if bins is None else pareto_edge_rows(c, e, bins)
    if name == "hull":
        return hull_rows(c, e)
    if name == "cherti":
        nbins = FRONTIER_BINS if bins is None else bins - 1
        return cherti_bins(np.log10(c), np.log10(e), nbins)[2]
    raise ClipscaleError(f"no frontier rows for --frontier {name!r}")
