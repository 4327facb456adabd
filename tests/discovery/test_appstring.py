from __future__ import annotations

import platform

import pytest

from jetpack.discovery import AppString, host_labels, parse_app_string
from jetpack.errors import DiscoveryError


@pytest.mark.parametrize(
    ("text", "name", "labels"),
    [
        ("example.com/app", "example.com/app", ()),
        ("example.com/app:1.0.0", "example.com/app", (("version", "1.0.0"),)),
        (
            "example.com/reduce-worker:1.0.0,channel=alpha,os=linux",
            "example.com/reduce-worker",
            (("version", "1.0.0"), ("channel", "alpha"), ("os", "linux")),
        ),
        ("example.com/app,version=2", "example.com/app", (("version", "2"),)),
        ("coreos.com/etcd:v2.0.0+git", "coreos.com/etcd", (("version", "v2.0.0+git"),)),
    ],
)
def test_parse(text: str, name: str, labels: tuple[tuple[str, str], ...]) -> None:
    app = parse_app_string(text)
    assert app == AppString(name, labels)  # type: ignore[arg-type]
    assert parse_app_string(str(app)) == app


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "it is empty"),
        ("example.com/app 1.0", "white space"),
        ("example.com/app:1:2", "colon may appear only once"),
        ("example.com/app,os=linux:1.0", "colon may appear only once"),
        ("example.com/app:", "nothing follows the colon"),
        ("Example.com/app", "not a valid AC Identifier"),
        ("example.com/app,channel", "'channel' is not label=value"),
        ("example.com/app,channel=", "needs one non-empty value"),
        ("example.com/app,a=b=c", "needs one non-empty value"),
        ("example.com/app,name=x", "'name' is not a label"),
        ("example.com/app,Bad=x", "'Bad' is not a valid label name"),
        ("example.com/app:1,version=2", "label 'version' is given twice"),
        ("example.com/app,os=linux,os=freebsd", "label 'os' is given twice"),
    ],
)
def test_rejects(text: str, why: str) -> None:
    with pytest.raises(DiscoveryError, match=why) as info:
        parse_app_string(text)
    assert str(info.value).startswith(f"invalid image name {text!r}: ")
    assert "name[:version][,label=value...]" in str(info.value)


def test_defaults_do_not_override() -> None:
    app = parse_app_string("example.com/app:1,os=freebsd")
    assert app.with_defaults({"os": "linux", "arch": "amd64"}).labels == (
        ("version", "1"),
        ("os", "freebsd"),
        ("arch", "amd64"),
    )


def test_host_labels_use_appc_spelling(monkeypatch: pytest.MonkeyPatch) -> None:
    # Other architectures cannot be produced on this machine: platform is patched (a mock).
    # The real host is checked too, below.
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert host_labels() == {"os": "linux", "arch": "amd64"}
    monkeypatch.setattr(platform, "machine", lambda: "i686")
    assert host_labels()["arch"] == "i386"
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert host_labels()["arch"] == "aarch64"


def test_host_labels_on_this_machine() -> None:
    labels = host_labels()
    assert labels["os"] == "linux"
    assert labels["arch"] in {"amd64", "i386", "aarch64", "armv7l", "ppc64le", "s390x"}
