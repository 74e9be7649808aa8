"""The wheel is complete: installed into a fresh venv outside the checkout, it finds the image
recipe, overlay, units and BPF source through importlib.resources, `cjb image build --check`
passes, `cjb xlat` translates the sample capture, and the installed distribution repacks into
the same wheel the image build would install. Fast checks of `--check` and `--agent-wheel`
follow (no venv)."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cjb.appliance.image import ImageError
from cjb.appliance.image.agent_wheel import check_wheel
from cjb.appliance.image.build import BuildOptions, check
from cjb.appliance.image.recipe import DEFAULT_RECIPE

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = Path("/usr/bin/python3")  # what the Debian package's venv uses, too


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(venv, wheel): `pip wheel --no-deps .`, then a venv in a temp dir with cjb[gateway]
    (its dependencies come from pip's configured index or local mirror)."""
    if not SYSTEM_PYTHON.exists():
        pytest.skip("no /usr/bin/python3")
    tmp = tmp_path_factory.mktemp("wheel")
    assert not tmp.is_relative_to(ROOT)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir",
         str(tmp / "dist"), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (tmp / "dist").glob("cjb-*.whl")
    venv = tmp / "venv"
    subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", str(venv)], check=True, timeout=120)
    done = subprocess.run(
        [str(venv / "bin/pip"), "install", "--quiet", f"{wheel}[gateway]"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return venv, wheel


def _run(venv: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin/cjb"), *argv],
        cwd=cwd, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_installed_wheel_passes_the_image_checks_and_translates(
    installed: tuple[Path, Path], tmp_path: Path
) -> None:
    venv, _ = installed
    site = next((venv / "lib").glob("python3*/site-packages"))
    done = _run(venv, tmp_path, "image", "build", "--check")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = {ln.split()[1]: ln for ln in done.stdout.splitlines() if ln[:4] in ("ok  ", "FAIL")}
    assert f"{site}/cjb/image_build/recipe.toml" in lines["recipe"]
    assert "agent unit cjb-appliance.service" in lines["overlay"]
    assert lines["agent"].split()[-1] == "cjb-0.1.0-py3-none-any.whl"

    probe = (
        "from cjb.common.packaged import bpf_source, gateway_systemd_dir, image_recipe_dir\n"
        "print(image_recipe_dir()); print(gateway_systemd_dir()); print(bpf_source())\n"
    )
    where = subprocess.run(
        [str(venv / "bin/python"), "-c", probe], cwd=tmp_path, capture_output=True, text=True,
        check=True, timeout=60,
    ).stdout.split()  # fmt: skip
    assert where == [
        f"{site}/cjb/image_build",
        f"{site}/cjb/gateway/systemd",
        f"{site}/cjb/gateway/dataplane/bpf/xlat.bpf.c",
    ]
    shipped = {p.name for p in Path(where[1]).iterdir()}
    in_tree = {p.name for p in (ROOT / "gateway/systemd").iterdir()}
    assert shipped == in_tree, "the wheel's gateway/systemd differs from the checkout's"

    assert _run(venv, tmp_path, "xlat", "sample", "s.pcap").returncode == 0
    done = _run(venv, tmp_path, "xlat", "s.pcap", "out.pcap")
    assert done.returncode == 0, done.stderr
    summary = {ln.split()[0]: ln.split() for ln in done.stdout.splitlines() if ln.strip()}
    assert summary["in"][1] == "19" and summary["out"][1] == "18", done.stdout
    assert (tmp_path / "out.pcap").stat().st_size > 24


@pytest.mark.slow
def test_installed_distribution_repacks_into_the_same_wheel(
    installed: tuple[Path, Path], tmp_path: Path
) -> None:
    """No checkout: the image build's agent wheel is the installed cjb, file for file."""
    venv, wheel = installed
    code = (
        "import sys; from pathlib import Path\n"
        "from cjb.appliance.image.agent_wheel import wheel_from_installed\n"
        "print(wheel_from_installed(Path(sys.argv[1]), 0))\n"
    )
    out = subprocess.run(
        [str(venv / "bin/python"), "-c", code, str(tmp_path / "re")], cwd=tmp_path,
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout.strip()  # fmt: skip
    with zipfile.ZipFile(wheel) as original, zipfile.ZipFile(out) as repacked:
        names = set(original.namelist())
        assert set(repacked.namelist()) == names
        record = repacked.read("cjb-0.1.0.dist-info/RECORD").decode().splitlines()
        for name in names - {"cjb-0.1.0.dist-info/RECORD"}:
            assert repacked.read(name) == original.read(name), name
        for line in record:
            name, digest, size = line.rsplit(",", 2)
            if name.endswith("RECORD"):
                continue
            data = repacked.read(name)
            want = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert digest == f"sha256={want}" and int(size) == len(data), name
    check_wheel(Path(out))


# -- fast: the check and the given wheel, against the checkout -------------------------------


def _recipe_copy(tmp_path: Path) -> Path:
    shutil.copytree(DEFAULT_RECIPE.parent, tmp_path / "recipe")
    return tmp_path / "recipe" / "recipe.toml"


def test_check_names_a_missing_agent_unit(tmp_path: Path) -> None:
    recipe = _recipe_copy(tmp_path)
    (recipe.parent / "overlay/etc/systemd/system/cjb-appliance.service").unlink()
    lines: list[str] = []
    bogus = tmp_path / "cjb-0.1.0-py3-none-any.whl"
    bogus.write_bytes(b"not a zip")
    assert not check(BuildOptions(recipe=recipe, agent_wheel=bogus), lines.append)
    fails = [ln for ln in lines if ln.startswith("FAIL")]
    assert any("overlay" in ln and "cjb-appliance.service is missing" in ln for ln in fails)
    assert any("agent wheel" in ln and "not a wheel" in ln for ln in fails), lines


def test_check_names_a_broken_recipe(tmp_path: Path) -> None:
    recipe = _recipe_copy(tmp_path)
    recipe.write_text(recipe.read_text().replace("[agent]", "[agnet]"))
    lines: list[str] = []
    assert not check(BuildOptions(recipe=recipe), lines.append)
    assert lines == ["FAIL recipe       recipe: [agent] needs `agent`"]


def test_given_wheel_must_be_a_cjb_wheel(tmp_path: Path) -> None:
    other = tmp_path / "cjb-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("something/else.py", "")
    with pytest.raises(ImageError, match="not a CJB wheel"):
        check_wheel(other)
    with pytest.raises(ImageError, match="expected a cjb-VERSION"):
        check_wheel(tmp_path / "x.tar.gz")
