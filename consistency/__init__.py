"""Segmenters, the MastSAM tracker, the multi-view consistency metric H and 2D evaluation."""
