"""Multi-view merging of MastSAM's IDs into 3D instances, by view consensus over superpoints.

MastSAM hands IDs from view to view, so a segmenter that splits an object in some views (a
chair as seat + back) and shows it whole in others leaves the object with several IDs: after
voting, some of its superpoints won one ID, some another. Two such IDs are one object when most
views that see both hold them inside one mask. This is the view-consensus rule of MaskClustering
(Yan et al., "MaskClustering: View Consensus based Mask Graph Clustering", CVPR 2024), applied
here to the tracked IDs on the superpoint graph instead of to per-frame masks:

- The 3D support of an ID (a *group* once IDs merge) is the set of superpoints it wins.
- A view *observes* a group when it sees at least `observe_fraction` of the group's points, or
  `observe_points` of them (ScanNet views see a tenth of a large object).
- For two adjacent groups (their superpoints touch), each view observing both *agrees* when the
  same ID (after the merges so far) covers most (`min_share`) of the points it sees of each.
- Consensus = agreeing views / views observing both; pairs with at least `min_views` such views
  and consensus >= the threshold merge. The threshold falls from `start` to `stop` by `step`,
  re-counting after each round of merges, so that the clearest merges happen first and inform the
  later ones (MaskClustering's iterative clustering with a falling threshold).

Before that, `cluster_views` (`MergeConfig.view_clustering`) clusters every view's tracked
masks as MaskClustering clusters per-frame masks (`lift3d.consistency.maskclustering`): a node
is one (view, ID) mask, so an ID that the tracker handed to another object in some views splits
there, which no global mapping of IDs can do.

The input is the (view, superpoint, label, points) table of `lift3d.points.superpoint_view_table`,
so the views are read once; the output maps every old ID to its merged ID (the smallest ID of
its group), which rewrites the label maps and the 3D vote alike.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from lift3d.consistency.segmenter import makes_fragments
from lift3d.errors import InputError
from lift3d.recon.superpoints import connected_components

logger = logging.getLogger(__name__)


@dataclass
class MergeConfig:
    """View-consensus merging of tracked IDs (after MastSAM, before the export)."""

    enabled: bool = True
    """Merge IDs into 3D instances (False: MastSAM's IDs as tracked, the paper's method alone)."""
    view_clustering: bool = True
    """First cluster the tracked masks of all views by MaskClustering's view consensus (each (view, ID) a node), so a track that drifted onto another object splits where it drifted; then merge the clusters over the superpoints (30 frames ::10 of scene0000_00: AP50 at simulated noise 0.15 0.705 -> 0.743; cross-view ARI, walls and floor included, 0.61 -> 0.85 with the geometric default)."""
    voxel: float = 0.05
    """Edge of the voxels (metres) that stand for scene points in the view clustering."""
    keep_dropped: Literal["auto", "keep", "unlabel"] = "auto"
    """Masks the view clustering finds under-segmented (most views that see them split what they cover): `keep` their tracked ID (shifted past the clusters), or `unlabel` them, as MaskClustering leaves them. `auto`: `keep` after the per-image classical segmenter, whose masks are fragments that other views split by nature (MaskClustering's rule, made for SAM's object-level masks, takes them for under-segmented: the colmap splat scene of the tests falls to matched IoU 0.41), `unlabel` after every other (SAM, SAM 2, geometric, simulated). scene0000_00, 300 frames at 320x240, masks simulated from GT at noise 0.15: AP50 / AP25 0.774 / 0.880 with `keep`, 0.819 / 0.920 with `unlabel`."""

    swallow_share: float | None = None
    """View clustering: a mask that holds at least this share of a whole mask of another view, besides the mask it lies in there, counts as split in that view (0: MaskClustering's rule alone, which misses an object that is a tenth of a wall mask). None: 0.5 after object-level segmenters (SAM, SAM 2, geometric, simulated; 12 runs of 30 simulated views on scene0000_00, mean AP50 / AP25 0.779 / 0.890 -> 0.803 / 0.907), 0 after the per-image classical one, whose fragments lie inside each other by nature (its colmap splat scene's splats and centres agree on 71% of labels with it, over 80% without). When > 0, a mask that contains two or more masks of another view counts as split there too, even where that view sees under 30% of it (a wall mask holding an object, seen from its far end): 60 runs of 30 simulated views (offsets 0::10 .. 9::10, seeds 0-2), mean AP50 / AP25 at noise 0.15 0.825 / 0.935 -> 0.837 / 0.943, at 0.3 0.746 / 0.894 -> 0.756 / 0.904; the 300-frame geometric default unchanged to the last digit; all 300 frames simulated at 0.15: AP 0.734 -> 0.729, AP50 / AP25 1.000 both."""
    start: float = 0.9
    """Consensus threshold of the first round."""
    stop: float = 0.5
    """Lowest consensus threshold: below it two IDs stay apart."""
    step: float = 0.1
    """Threshold decrement between rounds."""
    observe_fraction: float = 0.3
    """A view observes a group when it sees at least this share of the group's points..."""
    observe_points: int = 15
    """...or at least this many of them (a view of a room sees a tenth of a sofa: that is an observation). 15 rather than 30: a view that sees a strip of an object's other half is often the only one that sees both halves, and at 30 such pairs missed `min_views` (30 simulated frames of scene0000_00: AP50 +0.03 at noise 0, +0.07 at noise 0.15; 300-frame default run unchanged)."""
    min_share: float = 0.5
    """A view holds a group inside one mask when one ID covers at least this share of what it sees of it."""
    min_views: int = 2
    """Pairs observed together by fewer views never merge (no evidence)."""

    def resolve(self, segmenter_name: str | None) -> MergeConfig:
        """This config with `keep_dropped` and `swallow_share` decided for the segmenter named."""
        fragments = makes_fragments(segmenter_name)
        out = self
        if self.swallow_share is None:
            out = replace(out, swallow_share=0.0 if fragments else 0.5)
        if self.keep_dropped != "auto":
            return out
        rule = "keep" if fragments else "unlabel"
        return replace(out, keep_dropped=rule)


@dataclass
class ViewClusters:
    """The view clustering's result: luts[v] maps view v's tracked IDs to cluster IDs (0: the
    mask was dropped, under-segmented or without a valid 3D point); sources: cluster ID -> the
    tracked IDs of its masks."""

    luts: list[np.ndarray]
    sources: dict[int, list[int]]

    def apply(self, view: int, labels: np.ndarray) -> np.ndarray:  # [H, W] int -> int32
        """View `view`'s label map with cluster IDs."""
        from lift3d.consistency.maskclustering import relabel

        # IDs the clustering never saw (no valid point), and views past the last: dropped
        return relabel(self.luts[view] if view < len(self.luts) else np.zeros(1, np.int64), labels)


def cluster_views(
    views: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    config: MergeConfig | None = None,
) -> ViewClusters:
    """MaskClustering's view consensus over the tracked masks of every view (`MergeConfig.view_clustering`).

    Args:
        views: per view (pointmap [H, W, 3] float world metres, valid [H, W] bool, tracked
            labels [H, W] int), read once each.

    Returns:
        Per-view lookup tables from tracked to cluster IDs, and each cluster's tracked IDs.
    """
    from lift3d.consistency.maskclustering import cluster_view_masks, view_luts

    config = MergeConfig() if config is None else config
    resolved = config.resolve(None)  # `auto` / None without a segmenter: object-level masks
    frame_of, local_of, ids = cluster_view_masks(
        views, voxel=config.voxel, swallow_share=resolved.swallow_share
    )
    rule = resolved.keep_dropped
    if rule not in ("keep", "unlabel"):
        raise InputError(
            None, f"merge.keep_dropped must be auto, keep or unlabel, got {config.keep_dropped!r}"
        )
    if rule == "keep":  # under-segmented masks keep their tracked ID, shifted past the clusters
        ids = np.where(ids > 0, ids, int(ids.max(initial=0)) + local_of)
    luts = view_luts(frame_of, local_of, ids)
    sources: dict[int, set[int]] = {}
    for k, c in zip(local_of.tolist(), ids.tolist()):
        if c > 0:
            sources.setdefault(int(c), set()).add(int(k))
    return ViewClusters(luts, {c: sorted(v) for c, v in sorted(sources.items())})


@dataclass
class MergeResult:
    """mapping: [L] int64 old ID -> merged ID (identity where unmerged; index 0 stays 0);
    groups: merged ID -> the old IDs it took in (only groups of two or more)."""

    mapping: np.ndarray
    groups: dict[int, list[int]]

    def apply(self, labels: np.ndarray) -> np.ndarray:  # [..., H, W] int -> same shape int32
        """Label maps with the merged IDs (IDs beyond the mapping keep their value)."""
        labels = np.asarray(labels)
        lut = np.arange(max(int(labels.max(initial=0)) + 1, len(self.mapping)), dtype=np.int64)
        lut[: len(self.mapping)] = self.mapping
        return lut[labels].astype(np.int32)


def _dominant(view, group, label, count, num_groups):
    """Per (view, group) seen: total points seen, dominant label (> 0) and its points."""
    G1 = num_groups + 1
    vg = view * G1 + group
    seen_key, seen_inv = np.unique(vg, return_inverse=True)
    seen = np.bincount(seen_inv, weights=count).astype(np.int64)
    on = label > 0
    L = int(label.max(initial=0)) + 1
    key = vg[on] * L + label[on]
    k, inv = np.unique(key, return_inverse=True)
    tot = np.bincount(inv, weights=count[on]).astype(np.int64)
    kvg = k // L
    order = np.lexsort((k % L, -tot, kvg))
    first = order[np.unique(kvg[order], return_index=True)[1]]
    dom = np.zeros(len(seen_key), np.int64)
    dom_n = np.zeros(len(seen_key), np.int64)
    pos = np.searchsorted(seen_key, kvg[first])
    dom[pos] = k[first] % L
    dom_n[pos] = tot[first]
    return seen_key // G1, seen_key % G1, seen, dom, dom_n


def merge_instances(
    table: dict[str, np.ndarray],  # superpoint_view_table rows
    superpoint_sizes: np.ndarray,  # [S] points per superpoint
    adjacency: np.ndarray,  # [E, 2] int adjacent superpoints
    *,
    config: MergeConfig = MergeConfig(),
) -> MergeResult:
    """Merge tracked IDs whose 3D supports most views hold inside one mask (module docstring)."""
    view = np.asarray(table["view"], np.int64)
    sp = np.asarray(table["superpoint"], np.int64)
    label = np.asarray(table["label"], np.int64)
    count = np.asarray(table["count"], np.int64)
    S = len(superpoint_sizes)
    L = int(label.max(initial=0)) + 1
    mapping = np.arange(L, dtype=np.int64)
    if not config.enabled or L <= 2 or not len(view):
        return MergeResult(mapping, {})
    sizes = np.asarray(superpoint_sizes, np.int64)
    adjacency = np.asarray(adjacency, np.int64).reshape(-1, 2)

    thresholds = (
        np.arange(config.start, config.stop - 1e-9, -abs(config.step))
        if config.step
        else np.array([config.start])
    )
    for th in thresholds:
        for _ in range(100):  # re-count after each round of merges at this threshold
            mapped = mapping[label]
            # the superpoints' winners under the current mapping: the groups' supports
            on = mapped > 0
            key, inv = np.unique(sp[on] * L + mapped[on], return_inverse=True)
            tot = np.bincount(inv, weights=count[on])
            ks = key // L
            order = np.lexsort((key % L, -tot, ks))
            first = order[np.unique(ks[order], return_index=True)[1]]
            group_of_sp = np.zeros(S, np.int64)
            group_of_sp[ks[first]] = key[first] % L
            gsize = np.bincount(group_of_sp, weights=sizes, minlength=L)
            # adjacent group pairs
            ga, gb = group_of_sp[adjacency[:, 0]], group_of_sp[adjacency[:, 1]]
            ok = (ga > 0) & (gb > 0) & (ga != gb)
            pairs = np.unique(
                np.stack([np.minimum(ga[ok], gb[ok]), np.maximum(ga[ok], gb[ok])], 1), axis=0
            )
            if not len(pairs):
                break
            g = group_of_sp[sp]
            keep = g > 0
            v_, G_, seen, dom, dom_n = _dominant(
                view[keep], g[keep], mapped[keep], count[keep], L - 1
            )
            observed = seen >= np.minimum(
                config.observe_fraction * gsize[G_], config.observe_points
            )
            holds = dom_n >= config.min_share * seen
            # per view: group -> (observed, dominant label if held else -1)
            vg_key = v_ * L + G_
            ordk = np.argsort(vg_key)
            vg_key, observed, holds, dom = vg_key[ordk], observed[ordk], holds[ordk], dom[ordk]
            views = np.unique(v_)
            # evaluate every pair in every view: look up (v, a) and (v, b)
            n_pairs = len(pairs)
            both = np.zeros(n_pairs, np.int64)
            agree = np.zeros(n_pairs, np.int64)
            for v in views:
                qa = np.searchsorted(vg_key, v * L + pairs[:, 0])
                qb = np.searchsorted(vg_key, v * L + pairs[:, 1])
                qa_ok = (qa < len(vg_key)) & (
                    vg_key[np.minimum(qa, len(vg_key) - 1)] == v * L + pairs[:, 0]
                )
                qb_ok = (qb < len(vg_key)) & (
                    vg_key[np.minimum(qb, len(vg_key) - 1)] == v * L + pairs[:, 1]
                )
                qa, qb = np.minimum(qa, len(vg_key) - 1), np.minimum(qb, len(vg_key) - 1)
                obs = qa_ok & qb_ok & observed[qa] & observed[qb]
                both += obs
                agree += obs & holds[qa] & holds[qb] & (dom[qa] == dom[qb])
            with np.errstate(invalid="ignore", divide="ignore"):
                consensus = np.where(both > 0, agree / np.maximum(both, 1), 0.0)
            go = (both >= config.min_views) & (consensus >= th - 1e-12)
            if not go.any():
                break
            comp = connected_components(L, pairs[go])
            # every group joins its component; the component's merged ID is its smallest group
            rep = np.full(int(comp.max()) + 1, L, np.int64)
            np.minimum.at(rep, comp, np.arange(L))
            new_of_group = rep[comp]
            mapping = new_of_group[mapping]
            mapping[0] = 0
            logger.debug("merging at consensus %.2f: %d pairs", th, int(go.sum()))
    groups: dict[int, list[int]] = {}
    for old in range(1, L):
        if mapping[old] != old:
            groups.setdefault(int(mapping[old]), [int(mapping[old])]).append(old)
    logger.info(
        "multi-view merging: %d IDs merged into %d instances",
        sum(len(v) - 1 for v in groups.values()),
        len(groups),
    )
    return MergeResult(mapping, groups)
