"""Importing MASt3R from the user's install, and loading its checkpoints safely.

MASt3R (naver/mast3r, with dust3r and croco as submodules) is not on PyPI and is licensed
CC BY-NC-SA 4.0: lift3d never ships it. It is imported from the user's own clone, made
importable with PYTHONPATH. `require_mast3r` says how, in one message, before any work starts.

Checkpoints: MASt3R's own `load_model` unpickles the file with `weights_only=False` and `eval`s
the constructor string stored in it, which runs whatever the file says. `load_mast3r` instead
reads it with `torch.load(weights_only=True)`, allowing only `argparse.Namespace` (the file's
`args`), parses the constructor's keyword arguments from `args.model` without evaluating
anything (literals only: numbers, strings, tuples, `inf`), allows only the known class names
where MASt3R turns a string into code (`ALLOWED_NAMES`), falls back to the known configuration
of the released ViT-Large checkpoint when there is no such string, and loads the state dict
strictly enough to report a checkpoint that does not fit.
"""

from __future__ import annotations

import ast
import contextlib
import io
import logging
import math
from pathlib import Path
from types import MappingProxyType

from lift3d.checkpoints import refused_unpickle
from lift3d.errors import CheckpointError, NotInstalledError

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "MASt3R is not on PyPI (it is CC BY-NC-SA 4.0, non-commercial): install it yourself with "
    "`git clone --recursive https://github.com/naver/mast3r`, then "
    "`pip install -r mast3r/requirements.txt -r mast3r/dust3r/requirements.txt`, and make it "
    "importable with `export PYTHONPATH=/path/to/mast3r:$PYTHONPATH` (or a .pth file naming that "
    "folder in your site-packages); give its checkpoint with --mast3r-checkpoint "
    "(MASt3R_ViTLarge_BaseDecoder_512_catmlpdpt_metric.pth)"
)

# AsymmetricMASt3R's arguments for MASt3R_ViTLarge_BaseDecoder_512_catmlpdpt_metric, with the
# inference settings MASt3R's load_model substitutes (PatchEmbedDust3R, landscape_only=False)
VIT_LARGE_512_CONFIG = {
    "enc_depth": 24,
    "dec_depth": 12,
    "enc_embed_dim": 1024,
    "dec_embed_dim": 768,
    "enc_num_heads": 16,
    "dec_num_heads": 12,
    "pos_embed": "RoPE100",
    "patch_embed_cls": "PatchEmbedDust3R",
    "img_size": (512, 512),
    "head_type": "catmlp+dpt",
    "output_mode": "pts3d+desc24",
    "depth_mode": ("exp", -math.inf, math.inf),
    "conf_mode": ("exp", 1, math.inf),
    "two_confs": True,
    "desc_conf_mode": ("exp", 0, math.inf),
    "landscape_only": False,
}


def require_mast3r() -> None:
    """Import MASt3R and dust3r, or raise `NotInstalledError` saying how to install them."""
    try:
        # dust3r prints a RoPE2D warning on stdout at import; keep the CLI's stdout clean
        with contextlib.redirect_stdout(io.StringIO()) as out:
            # mast3r first: it puts its dust3r submodule on sys.path (mast3r.utils.path_to_dust3r)
            import mast3r.model  # noqa: F401, I001
            import mast3r.cloud_opt.sparse_ga  # noqa: F401
            import mast3r.fast_nn  # noqa: F401
            import dust3r.utils.image  # noqa: F401
    except (ImportError, AssertionError) as e:
        # AssertionError: dust3r asserts huggingface_hub >= 0.22 at import
        raise NotInstalledError(
            f"MASt3R cannot be imported ({e.__class__.__name__}: {e}). {INSTALL_HINT}"
        ) from None
    if out.getvalue().strip():
        logger.debug("mast3r import: %s", out.getvalue().strip())


def _literal(node: ast.AST):
    """The value of a literal expression node: constants, tuples, lists, dicts, -x and `inf`."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Tuple | ast.List):
        values = [_literal(e) for e in node.elts]
        return tuple(values) if isinstance(node, ast.Tuple) else values
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _literal(node.operand)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ValueError("sign applied to a non-number")
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Name) and node.id == "inf":
        return math.inf
    raise ValueError(f"not a literal: {ast.dump(node)[:80]}")


def parse_model_string(text: str) -> tuple[str, dict]:
    """(class name, keyword arguments) of a constructor string such as `AsymmetricMASt3R(...)`.

    Nothing is evaluated: the string is parsed and only literal keyword values are accepted.
    MASt3R's inference substitutions are applied (`ManyAR_PatchEmbed` -> `PatchEmbedDust3R`,
    `landscape_only=False`), as its own `load_model` does.

    Raises:
        ValueError: the string is not a call of a plain name with literal keyword arguments.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"not a Python expression ({e.msg})") from None
    call = tree.body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise ValueError("expected a constructor call such as AsymmetricMASt3R(...)")
    if call.args or any(kw.arg is None for kw in call.keywords):
        raise ValueError("expected keyword arguments only")
    kwargs = {kw.arg: _literal(kw.value) for kw in call.keywords}
    if kwargs.get("patch_embed_cls") == "ManyAR_PatchEmbed":
        kwargs["patch_embed_cls"] = "PatchEmbedDust3R"
    kwargs["landscape_only"] = False
    return call.func.id, kwargs


def model_config(args) -> dict:
    """AsymmetricMASt3R keyword arguments from a checkpoint's `args` (argparse.Namespace or None)."""
    text = getattr(args, "model", None)
    if not isinstance(text, str):
        logger.info("checkpoint has no model string: using the ViT-Large 512 configuration")
        return dict(VIT_LARGE_512_CONFIG)
    try:
        name, kwargs = parse_model_string(text)
    except ValueError as e:
        logger.warning(
            "cannot parse the checkpoint's model string (%s): using the ViT-Large 512 configuration",
            e,
        )
        return dict(VIT_LARGE_512_CONFIG)
    if name != "AsymmetricMASt3R":
        raise ValueError(
            f"the checkpoint holds a {name}, not an AsymmetricMASt3R (a DUSt3R checkpoint?)"
        )
    _check_allowed(kwargs)
    return kwargs


# the class-name strings of the configuration that MASt3R turns into code: dust3r's
# get_patch_embed `eval`s patch_embed_cls, guarded only by an `assert` (gone under python -O),
# and mast3r_head_factory knows these head types (its `eval` of "catconv:..." is unreachable)
ALLOWED_NAMES = MappingProxyType(
    {
        "patch_embed_cls": frozenset({"PatchEmbedDust3R", "ManyAR_PatchEmbed"}),
        "head_type": frozenset({"catmlp+dpt", "catconv"}),
    }
)


def _check_allowed(kwargs: dict) -> None:
    """Refuse a configuration naming a class outside `ALLOWED_NAMES`, before anything is built."""
    for key, allowed in ALLOWED_NAMES.items():
        if key in kwargs and kwargs[key] not in allowed:
            value = repr(kwargs[key])
            value = value if len(value) <= 60 else value[:57] + "..."
            raise ValueError(
                f"its model string has {key}={value}; lift3d builds only {', '.join(sorted(allowed))}"
            )


def _read_checkpoint(path: Path) -> dict:
    import argparse
    import pickle
    import zipfile

    import torch

    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        OSError,
        ValueError,
    ) as e:
        # torch's own text is never quoted or chained on when it refuses the contents: it advises
        # weights_only=False, which would run whatever the file holds
        refused = refused_unpickle(e)
        if refused is not None:
            raise CheckpointError(
                f"{path}: {refused}; a MASt3R checkpoint holds tensors and argparse.Namespace only"
            ) from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise CheckpointError(
            f"{path}: cannot read it as a MASt3R checkpoint (a PyTorch file holding tensors and "
            f"argparse.Namespace only was expected; it may be truncated or not a checkpoint): {first}"
        ) from None
    if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict):
        return ckpt
    if isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return {"model": ckpt, "args": None}  # a bare state dict
    raise CheckpointError(
        f"{path}: expected a dict with a 'model' state dict (MASt3R's format), found {type(ckpt).__name__}"
    )


def load_mast3r(checkpoint: str | Path, *, device: str = "cpu"):
    """An `AsymmetricMASt3R` in eval mode on `device`, from a checkpoint file, loaded safely.

    Args:
        checkpoint: a MASt3R `.pth` file (`{'model': state_dict, 'args': Namespace(model=...)}`,
            as released, or a bare state dict of the ViT-Large 512 model).
        device: torch device string (`cpu`, `cuda`, `cuda:1`).

    Raises:
        NotInstalledError: MASt3R is not importable.
        CheckpointError: the file is missing, unreadable, not MASt3R's, or its weights do not fit
            the model its configuration describes.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(f"{path}: MASt3R checkpoint not found")
    require_mast3r()
    ckpt = _read_checkpoint(path)
    try:
        config = model_config(ckpt.get("args"))
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    from mast3r.model import AsymmetricMASt3R

    described = ", ".join(f"{k}={v!r}" for k, v in config.items())
    try:
        net = AsymmetricMASt3R(**config)
    except (TypeError, ValueError, AssertionError, NotImplementedError) as e:
        raise CheckpointError(f"{path}: cannot build AsymmetricMASt3R({described}): {e}") from None
    try:
        # dust3r's load_state_dict copies dec_blocks to dec_blocks2 when the file has only one
        result = net.load_state_dict(ckpt["model"], strict=False)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:400]
        raise CheckpointError(
            f"{path}: the weights do not fit AsymmetricMASt3R({described}): {detail}"
        ) from None
    if result.missing_keys:
        raise CheckpointError(
            f"{path}: {len(result.missing_keys)} weights of AsymmetricMASt3R({described}) are missing "
            f"from the file, e.g. {', '.join(result.missing_keys[:5])}"
        )
    if result.unexpected_keys:
        logger.warning(
            "%s: %d unused entries, e.g. %s",
            path,
            len(result.unexpected_keys),
            ", ".join(result.unexpected_keys[:5]),
        )
    return net.eval().to(device)
