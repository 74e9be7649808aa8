"""The image recipe, mirrors, command lines, disk plan, manifest and progress lines: fast,
no root, no network (the full build is tests/test_image_build.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cjb.appliance.image import ImageError
from cjb.appliance.image.base import mmdebstrap_argv
from cjb.appliance.image.build import check_gateway_url, check_operator_ca
from cjb.appliance.image.disk import ESP_TYPE, ROOT_TYPE, plan_disk
from cjb.appliance.image.manifest import build_manifest, render
from cjb.appliance.image.progress import Progress
from cjb.appliance.image.recipe import DEFAULT_RECIPE, load_recipe
from cjb.appliance.image.rootfs import chroot_argv, pip_download_argv
from cjb.appliance.image.sources import mirror_lines, parse_deb822, parse_one_line

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security/
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
"""


def test_checked_in_recipe_loads_and_lists_what_the_agent_needs() -> None:
    recipe = load_recipe()
    pkgs = recipe.base_packages("amd64")
    for needed in (
        "python3",
        "python3-venv",
        "systemd",
        "wireguard-tools",
        "wireguard-go",
        "nftables",
        "linux-image-amd64",
        "systemd-boot-efi",
    ):
        assert needed in pkgs
    assert list(pkgs) == sorted(pkgs)
    assert "linux-image-arm64" in recipe.base_packages("arm64")
    assert recipe.extras == ("appliance",)
    assert "cjb-appliance.service" in recipe.enable
    assert (recipe.overlay / "etc/systemd/system/cjb-appliance.service").is_file()


def test_each_architecture_names_its_serial_console() -> None:
    recipe = load_recipe()
    assert "console=ttyS0" in recipe.cmdline("amd64")  # the PC UART
    assert "console=ttyAMA0" in recipe.cmdline("arm64")  # the PL011 UART (virt, Raspberry Pi)
    assert "ttyS0" not in recipe.cmdline("arm64")


def test_the_agent_is_watched_and_the_board_arms_its_hardware_watchdog() -> None:
    recipe = load_recipe()
    unit = (recipe.overlay / "etc/systemd/system/cjb-appliance.service").read_text()
    assert "Type=notify" in unit and "WatchdogSec=30s" in unit and "NotifyAccess=main" in unit
    system = (recipe.overlay / "etc/systemd/system.conf.d/cjb-watchdog.conf").read_text()
    assert "RuntimeWatchdogSec=30s" in system and "RebootWatchdogSec=" in system


def test_base_key_is_stable_and_moves_with_every_input() -> None:
    recipe = load_recipe()
    mirrors = ("deb http://a bookworm main",)
    key = recipe.base_key("amd64", mirrors, "mmdebstrap 1.3.5")
    assert key == recipe.base_key("amd64", mirrors, "mmdebstrap 1.3.5")
    assert key != recipe.base_key("arm64", mirrors, "mmdebstrap 1.3.5")
    assert key != recipe.base_key("amd64", ("deb http://b bookworm main",), "mmdebstrap 1.3.5")
    assert key != recipe.base_key("amd64", mirrors, "mmdebstrap 1.3.6")


def test_bad_recipes_say_what_is_wrong(tmp_path: Path) -> None:
    text = DEFAULT_RECIPE.read_text()
    bad = tmp_path / "r.toml"
    bad.write_text(text.replace('suite = "bookworm"', "suite = 12"))
    with pytest.raises(ImageError, match=r"\[base\] suite must be a str"):
        load_recipe(bad)
    bad.write_text(text.replace("[base.arch.arm64]", "[base.arch.riscv64]"))
    with pytest.raises(ImageError, match="unsupported architectures"):
        load_recipe(bad)
    with pytest.raises(ImageError, match="pass --recipe"):
        load_recipe(tmp_path / "missing.toml")
    with pytest.raises(ImageError, match=r"no \[base.arch.i386\]"):
        load_recipe().arch("i386")


def test_mirrors_come_from_the_hosts_apt_sources() -> None:
    sources = parse_deb822(DEB822)
    assert [s.uri for s in sources] == [
        "http://mirror.example/debian",
        "http://mirror.example/debian-security",
    ]
    assert mirror_lines("bookworm", sources) == (
        "deb http://mirror.example/debian bookworm main",
        "deb http://mirror.example/debian bookworm-updates main",
        "deb http://mirror.example/debian-security bookworm-security main",
    )
    one = parse_one_line(
        "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main\n"
        "deb-src http://m.example/debian bookworm main\n"
    )
    assert mirror_lines("bookworm", one)[0] == "deb http://m.example/debian bookworm main"
    # Nothing configured: Debian's own redirector.
    assert mirror_lines("bookworm", [])[2].startswith("deb http://deb.debian.org/debian-security")


def test_mmdebstrap_command_caches_debs_and_uses_every_mirror(tmp_path: Path) -> None:
    recipe = load_recipe()
    mirrors = mirror_lines("bookworm", [])
    argv = mmdebstrap_argv(recipe, "amd64", mirrors, tmp_path / "apt", tmp_path / "b.tar")
    assert argv[0] == "mmdebstrap" and "--variant=minbase" in argv and "--arch=amd64" in argv
    assert f"--include={','.join(recipe.base_packages('amd64'))}" in argv
    assert f"--setup-hook=sync-in {tmp_path / 'apt'} /var/cache/apt/archives/" in argv
    assert f"--customize-hook=sync-out /var/cache/apt/archives {tmp_path / 'apt'}" in argv
    assert argv[-4:] == ["bookworm", str(tmp_path / "b.tar"), *mirrors][-4:]


def test_pip_fetches_wheels_for_the_images_platform_not_the_hosts(tmp_path: Path) -> None:
    wheel = tmp_path / "cjb-0.1.0-py3-none-any.whl"
    argv = pip_download_argv(wheel, ("appliance",), "arm64", "3.11", tmp_path / "wh", tmp_path)
    assert argv[-1] == f"{wheel}[appliance]"
    assert "--only-binary=:all:" in argv and argv[argv.index("--python-version") + 1] == "3.11"
    platforms = [argv[i + 1] for i, a in enumerate(argv) if a == "--platform"]
    assert "manylinux_2_17_aarch64" in platforms and "manylinux_2_36_aarch64" in platforms
    assert not any("x86_64" in p for p in platforms)


def test_chroot_runs_in_a_private_mount_namespace(tmp_path: Path) -> None:
    argv = chroot_argv(tmp_path, ["python3", "-V"])
    assert argv[:4] == ["unshare", "--mount", "--propagation", "private"]
    assert argv[-3:] == [str(tmp_path), "python3", "-V"]


def test_disk_plan_is_a_gpt_with_an_esp_and_a_typed_root() -> None:
    plan = plan_disk("amd64", "seed", esp_mib=128, content_bytes=500 << 20, extra_mib=256)
    assert plan.esp.start_mib == 1 and plan.esp.size_mib == 128
    assert plan.root.start_mib == 129 and plan.root.size_mib == 550 + 256
    assert plan.total_mib == 1 + 128 + 806 + 1
    script = plan.sfdisk_script().splitlines()
    assert script[:4] == [
        "label: gpt",
        f"label-id: {plan.disk_uuid}",
        "unit: sectors",
        "first-lba: 2048",
    ]
    assert script[4] == (
        f'start=2048, size=262144, type={ESP_TYPE}, uuid={plan.esp.uuid}, name="ESP"'
    )
    assert f"type={ROOT_TYPE['amd64']}" in script[5] and "start=264192" in script[5]
    # Same seed, same UUIDs (repeatable images); another seed, others.
    again = plan_disk("amd64", "seed", 128, 500 << 20, 256)
    assert again == plan
    assert plan_disk("amd64", "other", 128, 500 << 20, 256).disk_uuid != plan.disk_uuid
    assert f"type={ROOT_TYPE['arm64']}" in plan_disk("arm64", "s", 128, 1, 1).sfdisk_script()


def test_manifest_is_sorted_and_has_no_timestamps() -> None:
    kwargs = dict(
        arch="amd64",
        suite="bookworm",
        base_key="k",
        cjb={"version": "0.1.0"},
        source_date_epoch=1764000000,
        debian_packages={"zlib1g:amd64": "1", "bash:amd64": "5.2"},
        python_packages={"pydantic": "2", "cjb": "0.1.0"},
        inputs={"b": 1, "a": 2},
        outputs={"x.img": {"sha256": "00", "bytes": 1}},
        disk={"disk_uuid": "U"},
    )
    text = render(build_manifest(**kwargs))  # type: ignore[arg-type]
    assert text == render(build_manifest(**kwargs))  # type: ignore[arg-type]
    doc = json.loads(text)
    assert list(doc["debian_packages"]) == ["bash:amd64", "zlib1g:amd64"]
    assert list(doc["python_packages"]) == ["cjb", "pydantic"]
    assert text.index('"a"') < text.index('"b"')
    assert not {"built_at", "build_time", "hostname"} & set(doc)


def test_progress_lines_carry_elapsed_time() -> None:
    lines: list[str] = []
    now = [100.0]
    progress = Progress(lines.append, clock=lambda: now[0], total=2)
    with progress.step("base root"):
        now[0] += 2.5
        progress.note("I: downloading")
        now[0] += 10
    assert lines == [
        "[1/2] base root ...",
        "    [   2.5 s] I: downloading",
        "[1/2] base root: done in 12.5 s",
    ]
    assert progress.timings == {"base root": 12.5}


def test_progress_run_failure_names_the_step_and_the_fix() -> None:
    progress = Progress(lambda _l: None)
    with pytest.raises(ImageError, match=r"(?s)widget failed \(exit 3\):\nboom\ninstall it"):
        progress.run(["sh", "-c", "echo boom; exit 3"], what="widget", fix="install it")
    with pytest.raises(ImageError, match="not installed"):
        progress.run(["cjb-no-such-program"], what="x")


def test_gateway_url_must_be_https_with_a_host() -> None:
    assert check_gateway_url("https://gw.example:8443/") == "https://gw.example:8443"
    for bad in ("http://gw.example", "gw.example:8443", "https://"):
        with pytest.raises(ImageError, match="https:// URL"):
            check_gateway_url(bad)


def test_operator_ca_must_be_a_ca_certificate(tmp_path: Path) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def cert(ca: bool) -> bytes:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "op")])
        now = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
        c = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return c.public_bytes(serialization.Encoding.PEM)

    good = tmp_path / "ca.pem"
    good.write_bytes(cert(True))
    assert check_operator_ca(good) == good.read_bytes()
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(cert(False))
    with pytest.raises(ImageError, match="is not a CA"):
        check_operator_ca(leaf)
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    with pytest.raises(ImageError, match="not a PEM certificate"):
        check_operator_ca(junk)


def test_foreign_arch_without_qemu_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from cjb.appliance.image import base

    monkeypatch.setattr(base, "host_arch", lambda: "amd64")
    if Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists():
        pytest.skip("this host has qemu-aarch64 binfmt: arm64 builds can run here")
    with pytest.raises(ImageError, match="qemu-user-static binfmt-support"):
        base.check_foreign_arch("arm64")
    base.check_foreign_arch("amd64")  # the host's own arch needs nothing
