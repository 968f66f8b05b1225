"""The image build's inputs: the Debian mirror comes only from the host's apt sources.

The repository must never name a package registry's host; build-images.sh used to fall back to
a hard-coded Debian mirror when the host had no apt source it could read. Now
``images/base/debian-mirror.sh`` derives the mirror from the configured sources (one-line and
deb822 formats) and fails with a clear message when there is none. No broker is needed here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

TESTCONTAINERS = Path(__file__).resolve().parents[1]
MIRROR_SH = TESTCONTAINERS / "images" / "base" / "debian-mirror.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def mirror(tmp_path: Path, codename: str, *sources: tuple[str, str]) -> tuple[int, str, str]:
    files = []
    for name, text in sources:
        f = tmp_path / name
        f.write_text(text)
        files.append(str(f))
    proc = subprocess.run(
        ["bash", str(MIRROR_SH), codename, *(files or ["/dev/null"])],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_one_line_sources_skip_third_party_and_options(tmp_path: Path) -> None:
    code, out, err = mirror(
        tmp_path,
        "bookworm",
        (
            "sources.list",
            "# a comment\n"
            "deb [signed-by=/k.gpg] https://vendor.example/apt nodistro main\n"
            "deb https://docker.example/debian bookworm stable\n"
            "deb-src http://src.example/debian bookworm main\n"
            "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main contrib\n"
            "deb http://mirror.example/debian-security bookworm-security main\n",
        ),
    )
    assert code == 0, err
    assert out.splitlines() == [
        "mirror=http://mirror.example/debian",
        "security=http://mirror.example/debian-security",
    ]


def test_deb822_sources_with_a_disabled_stanza(tmp_path: Path) -> None:
    code, out, err = mirror(
        tmp_path,
        "trixie",
        (
            "debian.sources",
            "Types: deb\n"
            "URIs: http://old.example/debian\n"
            "Suites: trixie\n"
            "Components: main\n"
            "Enabled: no\n"
            "\n"
            "# the archive\n"
            "Types: deb deb-src\n"
            "URIs: http://archive.example/debian\n"
            "Suites: trixie trixie-updates\n"
            "Components: main non-free-firmware\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
        ),
    )
    assert code == 0, err
    assert out.splitlines() == ["mirror=http://archive.example/debian", "security="]


def test_no_configured_debian_source_fails_clearly(tmp_path: Path) -> None:
    code, out, err = mirror(
        tmp_path, "bookworm", ("vendor.list", "deb https://vendor.example/apt nodistro main\n")
    )
    assert code == 1
    assert "mirror=" not in out
    assert "no Debian archive for 'bookworm main'" in err
    assert "UNIMQ_DEBIAN_MIRROR" in err


# XML namespace names are not hosts anyone downloads from
_ALLOWED_URLS = {"http://maven.apache.org/POM/4.0.0"}
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "0.0.0.0", ""}


def test_build_scripts_and_images_name_no_download_host() -> None:
    paths = [TESTCONTAINERS / "build-images.sh", TESTCONTAINERS / "prepare-machine.sh"]
    paths += [p for p in (TESTCONTAINERS / "images").rglob("*") if p.is_file()]
    offenders = []
    for path in paths:
        for url in re.findall(r"\b[a-z][a-z0-9+.-]*://[^\s\"'<>)}|,]*", path.read_text()):
            host = re.sub(r"^[^:]+://", "", url).split("/", 1)[0].split(":", 1)[0]
            if url not in _ALLOWED_URLS and host not in _LOCAL_HOSTS:
                offenders.append(f"{path.relative_to(TESTCONTAINERS)}: {url}")
    assert not offenders, "hard-coded download hosts:\n" + "\n".join(offenders)
