"""A recorded run read back: the `config` of `OUT/run.json` as a `SegmentConfig`.

run.json stores the config as plain values by option name (`config.config_to_json`), never
pickled classes, so it is rebuilt here field by field from the dataclasses' own type hints: the
flat options go back into their groups (`config.FLAT_GROUPS`), paths become `Path`, lists become
tuples, nested settings (`tracker`, `segmenter`, `mast3r`, `metric`) their dataclasses. A run.json from
before the segmenter settings were nested (`"segmenter": "sam"` beside `sam_checkpoint`,
`sam_model`, `sam2_model`, `geometric`, `simulated`) is read as the nested form, and the metric's
settings of earlier runs (`eps`, `metric_pairwise`, `metric_max_points`) go into `metric`. A key
the config no longer has (a field renamed since the run) is skipped with one warning naming it; a
value of the wrong kind is an `InputError` naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import types
import typing
from pathlib import Path

from lift3d.config import FLAT_GROUPS, SegmentConfig
from lift3d.errors import InputError

logger = logging.getLogger(__name__)

#: keys of a run.json `config` that are how the run was asked for, not what it did
_NOT_SETTINGS = ("config",)
#: settings a run.json of an earlier version holds at the top level, now in `metric`
_MOVED_TO_METRIC = {"eps": "eps", "metric_pairwise": "pairwise", "metric_max_points": "max_points"}
#: run.json keys of the flat segmenter settings -> where they live in `SegmenterConfig` now
_OLD_SEGMENTER_KEYS = {
    "sam_checkpoint": ("sam", "checkpoint"),
    "sam_model": ("sam", "model"),
    "sam2_model": ("sam2", "model"),
    "geometric": ("geometric", None),
    "simulated": ("simulated", None),
}


def read_run_config(path: str | Path) -> SegmentConfig:
    """The `SegmentConfig` recorded in a run.json (its `config`), or in a JSON of config values.

    Args:
        path: `OUT/run.json` of an earlier `lift3d segment`, or a JSON object of its fields.

    Raises:
        InputError: the file is missing, not JSON, holds no scene, or a value does not fit its field.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "--config: file not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(path, f"--config: not valid JSON ({e})") from None
    values = data.get("config", data) if isinstance(data, dict) else None
    if not isinstance(values, dict):
        raise InputError(path, "--config: expected a run.json or a JSON object of segment settings")
    if not values.get("scene"):
        raise InputError(path, "--config: no `scene` recorded")
    return _build(SegmentConfig, _grouped(_nested_segmenter(_moved(values, path))), path, "")


def _nested_segmenter(values: dict) -> dict:
    """An old run.json's flat segmenter settings (`"segmenter": "sam"`, `sam_checkpoint`, ...) in
    the nested form of `SegmenterConfig`; other values unchanged."""
    if not isinstance(values.get("segmenter"), str):
        return values
    values = dict(values)
    seg: dict = {"name": values.pop("segmenter")}
    for key, (part, name) in _OLD_SEGMENTER_KEYS.items():
        if key in values:
            value = values.pop(key)
            if name is None:
                seg[part] = value
            else:
                seg.setdefault(part, {})[name] = value
    values["segmenter"] = seg
    return values


def _grouped(values: dict) -> dict:
    """The flat options (`scene`, `vote`, `out` ...) moved into their groups (`input`, ...)."""
    owner = {f.name: g for g, c in FLAT_GROUPS.items() for f in dataclasses.fields(c)}
    out: dict = {g: {} for g in FLAT_GROUPS}
    for k, v in values.items():
        if k in owner:
            out[owner[k]][k] = v
        else:
            out[k] = v
    return out


def _moved(values: dict, path: Path) -> dict:
    """`values` with the settings of `_MOVED_TO_METRIC` in `metric` (checked under their old names;
    a value recorded in `metric` itself wins)."""
    from lift3d.consistency.metric import MetricConfig

    old = {k: v for k, v in values.items() if k in _MOVED_TO_METRIC}
    if not old:
        return values
    hints = typing.get_type_hints(MetricConfig)
    metric = values.get("metric")
    metric = dict(metric) if isinstance(metric, dict) else {}
    for k, v in old.items():
        metric.setdefault(_MOVED_TO_METRIC[k], _convert(hints[_MOVED_TO_METRIC[k]], v, path, k))
    return {**{k: v for k, v in values.items() if k not in old}, "metric": metric}


def _build(cls, values: dict, path: Path, prefix: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(k for k in values if k not in names and k not in _NOT_SETTINGS)
    if unknown:
        logger.warning(
            "%s: ignoring settings this version does not have: %s",
            path,
            ", ".join(prefix + k for k in unknown),
        )
    kwargs = {k: _convert(hints[k], v, path, prefix + k) for k, v in values.items() if k in names}
    return cls(**kwargs)


def _convert(hint, value, path: Path, name: str):
    """`value` (from JSON) as the type `hint` names."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)][:1] or (hint,)
        origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise InputError(
                path, f"--config: `{name}` must be an object of settings, got {value!r}"
            )
        return _build(hint, value, path, name + ".")
    if hint is Path:
        return Path(value)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise InputError(path, f"--config: `{name}` must be a list, got {value!r}")
        return tuple(value)
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise InputError(
                path, f"--config: `{name}` must be one of {typing.get_args(hint)}, got {value!r}"
            )
        return value
    if hint in (int, float, bool, str) and not isinstance(value, hint):
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        raise InputError(path, f"--config: `{name}` must be {hint.__name__}, got {value!r}")
    return value
