"""The multi-view consistency metric H, exact, and its ID-free pairwise variant.

For a pixel p of view w with 3D point f(p) and output vector M(p) (the one-hot of its label, or
a dense feature vector), `h(p) = mean over q in E(p) of cos(M(q), M(p))`, where E(p) is every
valid labeled pixel of every view (w and p itself included) whose 3D point lies within eps of
f(p); `H = mean of h(p)` over all valid labeled pixels. Unlabeled pixels (label 0, or an
all-zero feature vector) are left out everywhere. Nothing is sampled: every pair within eps
counts (`kernels.py` says how that stays fast, `score.py` how it stays in bounded memory).

Pairwise variant (labels only; it measures raw per-view masks, whose IDs mean nothing across
views, and relabelling cannot game it). For each unordered view pair {a, b}, a != b, the
correspondences C_ab are all pixel pairs (p in a, q in b), both labeled, with
|f(p) - f(q)| <= eps. Two correspondences (p, q) and (p', q') *agree* when
`[label(p) == label(p')] == [label(q) == label(q')]`: the Rand index between the two views'
partitions of their shared 3D points. `pairwise = sum_ab agreeing pairs of correspondences /
sum_ab pairs of correspondences`. Counting each ordered pair (a, b) and (b, a) instead doubles
both sums and gives the same number. It is computed from the contingency counts
n[a, la, b, lb] (never by enumerating pairs of pairs) as in the Rand index:
`agree_ab = C(N,2) + 2 sum C(n,2) - sum_la C(n_la.,2) - sum_lb C(n_.lb,2)`, which is invariant
to any permutation of the IDs within a view. None when no view pair has two correspondences.

One entry, `consistency_score(frames, config=MetricConfig(...))`, over views read one at a time
(`FrameSource`; `ArrayFrames` for arrays in memory). The modules behind it are its machinery:
`frames` (input and the spill), `tiles` (space cut into boxes), `grid` (a tile's cells, as the
kernels take them), `kernels` (numba), `pairwise` (the contingency entries), `reference` (brute
force, for the tests).
"""

from lift3d.consistency.metric.config import DEFAULT_MAX_POINTS, MetricConfig, MetricResult
from lift3d.consistency.metric.frames import ArrayFrames, FrameSource
from lift3d.consistency.metric.score import consistency_score, read_h_frame

__all__ = [
    "DEFAULT_MAX_POINTS",
    "ArrayFrames",
    "FrameSource",
    "MetricConfig",
    "MetricResult",
    "consistency_score",
    "read_h_frame",
]
