"""Pair graphs for MASt3R: which image pairs go through the network before global alignment.

MASt3R predicts pointmaps and descriptors for *pairs* of images, and its sparse global alignment
joins every pair it is given. The complete graph grows as N², and users report running out of
memory around 200 images, so larger scenes need a sparser graph that stays connected:

- `complete`: every pair. N(N-1)/2 inferences; the best geometry for small unordered photo sets.
- `swin`: a sliding window, each frame with its next `k` frames (default 3): about k·N pairs.
  For ordered frames (video, walk-around captures).
- `logwin`: a logarithmic window, each frame with the frames 1, 2, 4, ..., 2^(k-1) ahead
  (default k=4, offsets up to 8): about k·N pairs, with long-range links that keep drift low.
- `keyframe`: every `k`-th frame (default 10) is a keyframe; each frame is joined to its
  successor and to the keyframes before and after it, and the keyframes to each other
  (completely up to 12 keyframes, by a logarithmic window beyond): about 3·N pairs.
- `auto` (the default): `complete` up to 12 frames (at most 66 inferences), `logwin` with k=4
  beyond. Both are connected for any N >= 2, so every frame lands in one world frame.

`swin` and `logwin` optionally wrap around (`cyclic=True`, MASt3R's loop closure for captures
that come back to their start).

Pairs are returned in both directions, `(i, j)` and `(j, i)`, as MASt3R's `make_pairs(...,
symmetrize=True)` gives them to `sparse_global_alignment`.
"""

from __future__ import annotations

from lift3d.errors import InputError

GRAPH_KINDS = ("auto", "complete", "swin", "logwin", "keyframe")
# largest frame count for which `auto` picks the complete graph (66 pairs)
AUTO_COMPLETE_MAX = 12
DEFAULT_K = {"swin": 3, "logwin": 4, "keyframe": 10}


def make_pair_graph(
    n: int,
    *,
    kind: str = "auto",
    k: int | None = None,
    cyclic: bool = False,
) -> list[tuple[int, int]]:
    """Directed image pairs for MASt3R, both directions of every edge.

    Args:
        n: number of frames (indices 0..n-1, in capture order for the windowed graphs).
        kind: `auto`, `complete`, `swin`, `logwin` or `keyframe` (see the module docstring).
        k: window size (`swin`), number of power-of-two offsets (`logwin`) or keyframe stride
            (`keyframe`); default 3, 4 and 10. Ignored by `complete`.
        cyclic: let `swin` and `logwin` wrap around from the last frame to the first.

    Returns:
        pairs: the undirected edges `(i, j)`, i < j, sorted, followed by the same edges reversed.
        Empty for n < 2 (MASt3R needs two images).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InputError(None, f"the frame count must be a non-negative integer, got {n!r}")
    if kind not in GRAPH_KINDS:
        raise InputError(
            None, f"unknown pair graph {kind!r}; expected one of {', '.join(GRAPH_KINDS)}"
        )
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise InputError(None, f"the pair graph parameter k must be a positive integer, got {k!r}")
    if kind == "auto":
        kind = resolve_graph_kind(n)
    edges = _edges(n, kind, DEFAULT_K.get(kind, 0) if k is None else k, cyclic)
    ordered = sorted(edges)
    return ordered + [(j, i) for i, j in ordered]


def resolve_graph_kind(n: int) -> str:
    """The graph `auto` picks for n frames."""
    return "complete" if n <= AUTO_COMPLETE_MAX else "logwin"


def _edges(n: int, kind: str, k: int, cyclic: bool) -> set[tuple[int, int]]:
    if kind == "complete":
        return {(i, j) for i in range(n) for j in range(i + 1, n)}
    if kind == "swin":
        return _offset_edges(n, range(1, k + 1), cyclic)
    if kind == "logwin":
        return _offset_edges(n, [2**e for e in range(k)], cyclic)
    return _keyframe_edges(n, k)


def _offset_edges(n: int, offsets, cyclic: bool) -> set[tuple[int, int]]:
    """Each frame i joined to i + d for every offset d (mod n when cyclic)."""
    edges = set()
    for i in range(n):
        for d in offsets:
            j = i + d
            if cyclic:
                j %= n
            if j >= n or j == i:
                continue
            edges.add((min(i, j), max(i, j)))
    return edges


def _keyframe_edges(n: int, stride: int) -> set[tuple[int, int]]:
    """Successive frames, each frame to its neighbouring keyframes, and keyframes among themselves."""
    keys = list(range(0, n, stride))
    edges = {(i, i + 1) for i in range(n - 1)}
    for i in range(n):
        before = (i // stride) * stride
        after = before + stride
        for key in (before, after):
            if key < n and key != i:
                edges.add((min(i, key), max(i, key)))
    if len(keys) <= AUTO_COMPLETE_MAX:
        key_edges = _edges(len(keys), "complete", 0, False)
    else:
        key_edges = _offset_edges(len(keys), [2**e for e in range(DEFAULT_K["logwin"])], False)
    edges |= {(keys[a], keys[b]) for a, b in key_edges}
    return edges


def is_connected(n: int, pairs: list[tuple[int, int]]) -> bool:
    """Whether the pairs join all n frames into one component (union-find)."""
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, j in pairs:
        parent[find(i)] = find(j)
    return len({find(i) for i in range(n)}) <= 1
