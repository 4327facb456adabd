"""The quick start's example image (images/hello, what scripts/demo runs) in a real pod:
it prints its environment, with the metadata token hidden, and the metadata service's
answers, each of which the test checks against what the host knows of the pod."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.conftest import PodEnv, open_pod_env


@pytest.fixture(scope="module")
def hello_env(tmp_path_factory: pytest.TempPathFactory, hello_layout: Path) -> Iterator[PodEnv]:
    from jetpack.cli.main import run

    aci = tmp_path_factory.mktemp("hello-aci") / "hello.aci"
    assert run(["aci", "build", str(hello_layout), str(aci)]) == 0
    with open_pod_env(tmp_path_factory.mktemp("hello"), {"example.com/hello": aci}) as env:
        yield env


def test_hello_prints_its_environment_and_the_metadata_answers(hello_env: PodEnv) -> None:
    proc = hello_env.run("--uuid-file-save", str(hello_env.root / "uuid"), "example.com/hello")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    uuid = (hello_env.root / "uuid").read_text().strip()
    image_id = hello_env.image_ids["example.com/hello"]
    lines = [line.removeprefix("[hello] ") for line in out.splitlines()]
    assert "pre-start: preparing hello" in lines
    assert "Hello from a Jetpack pod" in lines
    assert f"app: hello  user: hello  cwd: /home/hello  hostname: jetpack-{uuid}" in lines
    env = {
        line.strip().partition("=")[0]: line.strip().partition("=")[2]
        for line in lines[lines.index("environment:") + 1 : lines.index("metadata service:")]
    }
    assert env["AC_APP_NAME"] == "hello"
    assert env["container"] == "jetpack"
    assert env["GREETING"] == "Hello from a Jetpack pod"
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/<token>", env["AC_METADATA_URL"])
    # no token in the output: the URL's last part is hidden
    assert not re.search(r"127\.0\.0\.1:\d+/[A-Za-z0-9_-]{20,}", out)
    assert f"  pod uuid:        {uuid}" in lines
    assert f"  app image id:    {image_id[:19]}..." in lines
    assert "  pod annotations: []" in lines
    assert any(
        line.startswith(
            '  app annotations: [{"name": "authors", "value": "The Jetpack developers"}'
        )
        for line in lines
    )
    signed = [line for line in lines if line.startswith("  hmac/sign:")]
    assert len(signed) == 1 and re.fullmatch(r"  hmac/sign:\s+[A-Za-z0-9+/]{24}\.\.\.", signed[0])
