"""Nothing heavy happens at import: `lift3d --help` must not pull in torch, open3d, gsplat or viser."""

from __future__ import annotations

import subprocess
import sys

HEAVY = (
    "torch",
    "open3d",
    "gsplat",
    "viser",
    "sklearn",
    "cv2",
    "ray",
    "segment_anything",
    "matplotlib",
)


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_lift3d_is_light():
    assert _loaded_after("import lift3d, lift3d.recon, lift3d.consistency, lift3d.viewers") == set()


def test_cli_help_is_light():
    assert _loaded_after("import lift3d.cli") == set()


def test_cli_help_lists_the_subcommands():
    out = subprocess.run(
        [sys.executable, "-m", "lift3d.cli", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    for cmd in ("segment", "metric", "synth", "view", "eval", "batch"):
        assert cmd in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "lift3d.cli", "eval", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "davis" in out.stdout and "scannet" in out.stdout


def test_cli_prints_one_line_on_bad_input(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "lift3d.cli", "segment", "--scene", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "scene not found" in out.stderr


def test_synth_writes_a_scene_the_scannet_reader_loads(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "lift3d.cli",
            "synth",
            "--out",
            str(tmp_path / "scene0998_00"),
            "--frames",
            "3",
            "--size",
            "64",
            "48",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    from lift3d.recon import load_scene

    scene = load_scene(tmp_path / "scene0998_00")
    assert scene.kind == "scannet" and len(scene) == 3 and scene.size == (64, 48)


def test_each_package_names_its_public_surface():
    import importlib

    for name in (
        "lift3d",
        "lift3d.recon",
        "lift3d.recon.scannet",
        "lift3d.consistency",
        "lift3d.viewers",
    ):
        package = importlib.import_module(name)
        assert package.__all__, name
        for public in package.__all__:
            value = getattr(package, public)
            # a name that is also a submodule's must stay the function or class, not the module
            assert not isinstance(value, type(package)), f"{name}.{public} is a module"
        assert set(package.__all__) <= set(dir(package))


def test_every_public_name_resolves_without_heavy_imports():
    code = (
        "import lift3d, lift3d.recon, lift3d.consistency, lift3d.viewers\n"
        "for p in (lift3d, lift3d.recon, lift3d.consistency, lift3d.viewers):\n"
        "    [getattr(p, n) for n in p.__all__]"
    )
    assert _loaded_after(code) == set()
