"""Environment-driven configuration of the real-broker test fixtures.

Environment variables (all optional):

``UNIMQ_TEST_RABBITMQ_IMAGE`` / ``UNIMQ_TEST_KAFKA_IMAGE`` / ``UNIMQ_TEST_ROCKETMQ_IMAGE``
    Image of the broker's primary (newest) version. Unset: the value from
    ``testcontainers/.images.env`` (written by ``build-images.sh``) if that file
    exists, else the official Docker Hub image of that version (``official_image``).
``UNIMQ_TEST_<BROKER>_IMAGE_<VERSION>`` (e.g. ``UNIMQ_TEST_RABBITMQ_IMAGE_3_10_8``)
    Image of one version (dots as underscores), looked up the same way; for the
    primary version it wins over the unversioned variable.
``UNIMQ_TEST_BROKER_VERSIONS``
    ``all`` (default) runs the version matrix, ``primary`` only the primary
    versions (see ``unimq_brokers.versions``).
``UNIMQ_TEST_IMAGES_ENV``
    Path of the images env file to read instead of ``testcontainers/.images.env``;
    ``none`` disables reading one.
``UNIMQ_TEST_BROKERS``
    ``containers`` (default) starts containers; ``external`` takes broker URLs
    from ``UNIMQ_TEST_RABBITMQ_URL``, ``UNIMQ_TEST_KAFKA_URL`` and
    ``UNIMQ_TEST_ROCKETMQ_URL`` instead.
``UNIMQ_TEST_ROCKETMQ_MQADMIN``
    external mode only: command prefix that runs mqadmin against the external
    RocketMQ (e.g. ``docker exec my-rmq sh /home/rocketmq/rocketmq-5.3.3/bin/mqadmin -n 127.0.0.1:9876``);
    without it ``create_topic``/``create_group`` raise ``BrokerControlUnsupported``.
``UNIMQ_TEST_START_TIMEOUT``
    seconds to wait for a broker to become ready (default 180).
``CI``
    ``true``: an unavailable Docker engine or image FAILS the tests instead of
    skipping them.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTCONTAINERS_DIR = HERE.parent
DEFAULT_IMAGES_ENV = TESTCONTAINERS_DIR / ".images.env"

#: Official (Docker Hub) image of a version, used when neither an env var nor .images.env
#: names one.
OFFICIAL_IMAGES = {
    "rabbitmq": "rabbitmq:{version}",
    "kafka": "apache/kafka:{version}",
    "rocketmq": "apache/rocketmq:{version}",
}


def official_image(kind: str, version: str) -> str:
    return OFFICIAL_IMAGES[kind].format(version=version)


IMAGE_ENV_VARS = {
    "rabbitmq": "UNIMQ_TEST_RABBITMQ_IMAGE",
    "kafka": "UNIMQ_TEST_KAFKA_IMAGE",
    "rocketmq": "UNIMQ_TEST_ROCKETMQ_IMAGE",
}

URL_ENV_VARS = {
    "rabbitmq": "UNIMQ_TEST_RABBITMQ_URL",
    "kafka": "UNIMQ_TEST_KAFKA_URL",
    "rocketmq": "UNIMQ_TEST_ROCKETMQ_URL",
}

#: Label our locally built images carry (build-images.sh adds it).
LOCAL_IMAGE_LABEL = "org.unimq.test.image"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def is_ci() -> bool:
    return _truthy(os.environ.get("CI"))


def mode() -> str:
    m = os.environ.get("UNIMQ_TEST_BROKERS", "containers").strip().lower() or "containers"
    if m not in {"containers", "external"}:
        raise ValueError(f"UNIMQ_TEST_BROKERS must be 'containers' or 'external', not {m!r}")
    return m


def start_timeout() -> float:
    return float(os.environ.get("UNIMQ_TEST_START_TIMEOUT", "180"))


def _read_images_env() -> dict[str, str]:
    path_s = os.environ.get("UNIMQ_TEST_IMAGES_ENV")
    if path_s and path_s.strip().lower() == "none":
        return {}
    path = Path(path_s) if path_s else DEFAULT_IMAGES_ENV
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :]
        key, sep, value = line.partition("=")
        if sep:
            parts = shlex.split(value)
            out[key.strip()] = parts[0] if parts else ""
    return out


def version_env_var(kind: str, version: str) -> str:
    """``UNIMQ_TEST_RABBITMQ_IMAGE_3_10_8`` for ``("rabbitmq", "3.10.8")``."""
    suffix = "".join(ch if ch.isalnum() else "_" for ch in version).upper()
    return f"{IMAGE_ENV_VARS[kind]}_{suffix}"


def image_for(kind: str, version: str, *, primary: bool) -> tuple[str, str]:
    """Return (image, where-it-came-from) for ``version`` of broker ``kind``.

    Order: the versioned variable, then (for the primary version) the unversioned one, each
    from the environment first and then from the images env file; else the official image.
    """
    names = [version_env_var(kind, version)]
    if primary:
        names.append(IMAGE_ENV_VARS[kind])
    for var in names:
        if os.environ.get(var):
            return os.environ[var], f"${var}"
    from_file = _read_images_env()
    for var in names:
        if from_file.get(var):
            where = os.environ.get("UNIMQ_TEST_IMAGES_ENV") or DEFAULT_IMAGES_ENV
            return from_file[var], f"{var} in {where}"
    return official_image(kind, version), "default (official image)"


def external_url(kind: str) -> str | None:
    return os.environ.get(URL_ENV_VARS[kind]) or None


def external_mqadmin() -> list[str] | None:
    cmd = os.environ.get("UNIMQ_TEST_ROCKETMQ_MQADMIN")
    return shlex.split(cmd) if cmd else None
