"""Helpers shared by the batch throughput benchmarks: load average, medians, Maven classpaths."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def maven_classpath(pom: Path, cache: Path) -> str:
    """Copy the dependencies listed in ``pom`` into ``cache`` (once) with Maven, from the
    machine's configured Maven source, and return the classpath of the jars."""
    lib = cache / "lib"
    if not lib.is_dir() or not any(lib.glob("*.jar")):
        mvn = shutil.which("mvn")
        if mvn is None:
            sys.exit("mvn not found: install Maven (and a JDK 11+) to run the Java load tool")
        print(f"fetching the jars of {pom.relative_to(ROOT)} into {lib} ...", file=sys.stderr)
        subprocess.run(
            [mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",
             f"-DoutputDirectory={lib}"],
            check=True,
        )  # fmt: skip
    return os.pathsep.join(str(jar) for jar in sorted(lib.glob("*.jar")))


def cache_dir(name: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "unimq-benchmarks" / name
