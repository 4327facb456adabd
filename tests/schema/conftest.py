"""Fixtures for the schema tests: valid manifests as plain JSON data, built fresh each time."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

IMAGE_ID = "sha512-" + "0123456789abcdef" * 8
OTHER_ID = "sha512-" + "f" * 128

FULL_IMAGE: dict[str, Any] = {
    "acKind": "ImageManifest",
    "acVersion": "0.8.11",
    "name": "example.com/reduce-worker",
    "labels": [
        {"name": "version", "value": "1.0.0"},
        {"name": "arch", "value": "amd64"},
        {"name": "os", "value": "linux"},
    ],
    "app": {
        "exec": ["/usr/bin/reduce-worker", "--quiet"],
        "user": "100",
        "group": "300",
        "supplementaryGIDs": [400, 500],
        "eventHandlers": [
            {"exec": ["/usr/bin/data-downloader"], "name": "pre-start"},
            {"exec": ["/usr/bin/deregister-worker", "--verbose"], "name": "post-stop"},
        ],
        "workingDirectory": "/opt/work",
        "environment": [{"name": "REDUCE_WORKER_DEBUG", "value": "true"}],
        "isolators": [
            {"name": "resource/cpu", "value": {"request": "250m", "limit": "500m"}},
            {"name": "resource/memory", "value": {"request": "1G", "limit": "2G"}},
            {
                "name": "os/linux/capabilities-retain-set",
                "value": {"set": ["CAP_NET_BIND_SERVICE"]},
            },
        ],
        "mountPoints": [{"name": "work", "path": "/var/lib/work", "readOnly": True}],
        "ports": [
            {"name": "health", "port": 4000, "protocol": "tcp", "socketActivated": True},
            {"name": "ftp-data", "port": 20000, "count": 1000, "protocol": "tcp"},
        ],
        "userAnnotations": {"any key": "value"},
        "userLabels": {"team": "data"},
    },
    "dependencies": [
        {
            "imageName": "example.com/reduce-worker-base",
            "imageID": IMAGE_ID,
            "labels": [{"name": "os", "value": "linux"}, {"name": "env", "value": "canary"}],
            "size": 22017258,
        }
    ],
    "pathWhitelist": [
        "/etc/ca/example.com/crt",
        "/usr/bin/map-reduce-worker",
        "/etc/systemd/system/",
    ],
    "annotations": [
        {"name": "authors", "value": "Carly Container <carly@example.com>"},
        {"name": "created", "value": "2014-10-27T19:32:27.67021798Z"},
        {"name": "documentation", "value": "https://example.com/docs"},
        {"name": "homepage", "value": "https://example.com"},
        {"name": "appc.io/executor/supports-systemd-notify", "value": "false"},
    ],
}

FULL_POD: dict[str, Any] = {
    "acVersion": "0.8.11",
    "acKind": "PodManifest",
    "apps": [
        {
            "name": "reduce-worker",
            "image": {
                "name": "example.com/reduce-worker",
                "id": IMAGE_ID,
                "labels": [{"name": "version", "value": "1.0.0"}],
            },
            "app": {
                "exec": ["/bin/reduce-worker", "--debug=true"],
                "group": "0",
                "user": "0",
                "mountPoints": [{"name": "work", "path": "/var/lib/work"}],
                "ports": [{"name": "ftp", "protocol": "tcp", "port": 21}],
            },
            "readOnlyRootFS": True,
            "mounts": [{"volume": "worklib", "path": "/var/lib/work"}],
        },
        {
            "name": "backup",
            "image": {"id": OTHER_ID},
            "mounts": [
                {
                    "volume": "scratch",
                    "path": "/mnt/bar",
                    "appVolume": {"name": "scratch", "kind": "empty", "mode": "0700", "uid": 1},
                }
            ],
            "annotations": [{"name": "foo", "value": "baz"}],
        },
    ],
    "volumes": [
        {
            "name": "worklib",
            "kind": "host",
            "source": "/opt/tenant1/work",
            "readOnly": True,
            "recursive": True,
        },
        {"name": "database", "kind": "empty"},
    ],
    "isolators": [
        {"name": "resource/memory", "value": {"limit": "4G"}},
        {"name": "os/unix/sysctl", "value": {"net.ipv4.tcp_mtu_probing": "1"}},
    ],
    "annotations": [{"name": "ip-address", "value": "10.1.2.3"}],
    "ports": [{"name": "ftp", "hostPort": 2121, "hostIP": "203.0.113.23"}],
    "userAnnotations": {"owner": "me"},
    "userLabels": {"tier": "batch"},
}


@pytest.fixture
def image_doc() -> dict[str, Any]:
    """The spec's example image manifest (filled in), as a fresh, mutable dict."""
    return copy.deepcopy(FULL_IMAGE)


@pytest.fixture
def pod_doc() -> dict[str, Any]:
    """The spec's example pod manifest (filled in, reified), as a fresh, mutable dict."""
    return copy.deepcopy(FULL_POD)


@pytest.fixture
def make_app_doc() -> Callable[..., dict[str, Any]]:
    """Factory: a minimal image manifest whose app has the given extra fields."""

    def make(**app: Any) -> dict[str, Any]:
        base: dict[str, Any] = {"exec": ["/bin/true"], "user": "0", "group": "0"}
        base.update(app)
        return {
            "acKind": "ImageManifest",
            "acVersion": "0.8.11",
            "name": "example.com/app",
            "app": base,
        }

    return make
