"""The metadata service as pods see it: real pods asking it with busybox ``wget``.

Each pod runs ``probe.sh`` (from a host volume at ``/t``), whose ``q NAME PATH [FORM]``
prints the status, Content-Type, length and body of one request to
``$AC_METADATA_URL/acMetadata/v1/PATH`` as ``NAME key=value`` lines; the tests compare
them with what the host knows of the pod (its manifest, its images' manifests and IDs).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.runtime.conftest import JETPACK, TIMEOUT, PodEnv, open_pod_env

JSON = "application/json"
TEXT = "text/plain; charset=us-ascii"

ANNOTATED = "example.com/annotated"
IMAGE_ANNOTATIONS = [
    {"name": "example.com/first", "value": "image-1"},
    {"name": "example.com/second", "value": "image-2"},
    {"name": "example.com/third", "value": "image-3"},
]
SHELL_APP = {"exec": ["/bin/sh", "/t/probe.sh"], "user": "0", "group": "0"}

PROBE = r"""
B="$AC_METADATA_URL/acMetadata/v1"
q() {  # q NAME PATH [FORM]: one request, its answer as "NAME key=value" lines
    rm -f /tmp/b /tmp/h
    if [ -n "$3" ]; then
        wget -q -S -O /tmp/b --post-data "$3" "$B/$2" 2>/tmp/h
    else
        wget -q -S -O /tmp/b "$B/$2" 2>/tmp/h
    fi
    echo "$1 status=$(grep -m1 'HTTP/1' /tmp/h | sed 's/^ *HTTP\/1\.[01] \([0-9]*\).*/\1/')"
    echo "$1 ctype=$(grep -i -m1 '^ *content-type:' /tmp/h | sed 's/^ *[^:]*: *//' | tr -d '\r')"
    echo "$1 len=$(cat /tmp/b 2>/dev/null | wc -c)"
    echo "$1 body=$(cat /tmp/b 2>/dev/null)"
}
enc() {  # form-encode what base64 may hold
    echo "$1" | sed 's/+/%2B/g; s/\//%2F/g; s/=/%3D/g'
}
"""


@pytest.fixture(scope="module")
def mds_env(
    tmp_path_factory: pytest.TempPathFactory,
    standard_acis: dict[str, Path],
    busybox_aci: Callable[..., Path],
) -> Iterator[PodEnv]:
    """A data directory with the standard images and one whose manifest has annotations."""
    images = {
        **standard_acis,
        ANNOTATED: busybox_aci(ANNOTATED, SHELL_APP, annotations=IMAGE_ANNOTATIONS),
    }
    with open_pod_env(tmp_path_factory.mktemp("mds"), images) as env:
        yield env


def _probe_dir(env: PodEnv, name: str, script: str) -> Path:
    shared = env.root / name
    shared.mkdir(exist_ok=True)
    (shared / "probe.sh").write_text(PROBE + script)
    return shared


def _answers(output: str, app: str) -> dict[tuple[str, str], str]:
    """``NAME key=value`` lines an app printed → {(NAME, key): value}."""
    found = {}
    prefix = f"[{app}] "
    for line in output.splitlines():
        if not line.startswith(prefix):
            continue
        name, _, rest = line[len(prefix) :].partition(" ")
        key, sep, value = rest.partition("=")
        if sep:
            found[(name, key)] = value
    return found


def _aci_manifest(aci: Path) -> bytes:
    with tarfile.open(aci) as tar:
        member = tar.extractfile("manifest")
        assert member is not None
        return member.read()


def _check(answers: dict[tuple[str, str], str], name: str, status: int, ctype: str) -> str:
    assert answers[(name, "status")] == str(status), (name, answers)
    assert answers[(name, "ctype")] == ctype, (name, answers)
    body = answers[(name, "body")]
    assert answers[(name, "len")] == str(len(body.encode())), (name, "trailing bytes", answers)
    return body


@pytest.mark.parametrize("net", ["host", "none"])
def test_every_endpoint_from_inside_a_pod(
    mds_env: PodEnv, net: str, busybox_aci: Callable[..., Path]
) -> None:
    shared = _probe_dir(
        mds_env,
        f"contract-{net}",
        """
q uuid pod/uuid
q manifest pod/manifest
q annotations pod/annotations
q app-annotations apps/annotated/annotations
q app-manifest apps/annotated/image/manifest
q app-id apps/annotated/image/id
q other-app-annotations apps/plain/annotations
q other-app-id apps/plain/image/id
q no-app apps/nosuch/image/id
q no-path pod/nosuch
q sign pod/hmac/sign "content=Old%20MacDonald"
S=$(cat /tmp/b)
U=$(wget -q -O - $B/pod/uuid)
q verify pod/hmac/verify "content=Old%20MacDonald&uuid=$U&signature=$(enc $S)"
q tampered pod/hmac/verify "content=Old%20MacDonalD&uuid=$U&signature=$(enc $S)"
q sign-get pod/hmac/sign
""",
    )
    manifest = mds_env.root / f"pod-{net}.json"
    manifest.write_text(
        json.dumps(
            {
                "acVersion": "0.8.11",
                "acKind": "PodManifest",
                "apps": [
                    {
                        "name": "annotated",
                        "image": {"id": mds_env.image_ids[ANNOTATED]},
                        "annotations": [
                            {"name": "example.com/second", "value": "pod-2"},
                            {"name": "example.com/fourth", "value": "pod-4"},
                        ],
                        "mounts": [{"volume": "t", "path": "/t"}],
                    },
                    {
                        "name": "plain",
                        "image": {"id": mds_env.image_ids["example.com/busybox"]},
                    },
                ],
                "volumes": [{"name": "t", "kind": "host", "source": str(shared)}],
                "annotations": [{"name": "example.com/pod", "value": "yes"}],
            }
        )
    )
    uuid_file = mds_env.root / f"uuid-{net}"
    result = mds_env.run(
        "--net", net, "--uuid-file-save", str(uuid_file), "--pod-manifest", str(manifest)
    )
    assert result.returncode == 0, result.stderr
    uuid = uuid_file.read_text().strip()
    got = _answers(result.stdout, "annotated")

    assert _check(got, "uuid", 200, TEXT) == uuid
    served = json.loads(_check(got, "manifest", 200, JSON))
    assert served == json.loads(mds_env.ok("cat-manifest", uuid).stdout)
    assert json.loads(_check(got, "annotations", 200, JSON)) == [
        {"name": "example.com/pod", "value": "yes"}
    ]
    assert json.loads(_check(got, "app-annotations", 200, JSON)) == [
        {"name": "example.com/first", "value": "image-1"},
        {"name": "example.com/second", "value": "pod-2"},  # replaced in place
        {"name": "example.com/third", "value": "image-3"},
        {"name": "example.com/fourth", "value": "pod-4"},  # appended
    ]
    aci = busybox_aci(ANNOTATED, SHELL_APP, annotations=IMAGE_ANNOTATIONS)
    assert _check(got, "app-manifest", 200, JSON).encode() == _aci_manifest(aci)
    assert _check(got, "app-id", 200, TEXT) == mds_env.image_ids[ANNOTATED]
    assert _check(got, "other-app-annotations", 200, JSON) == "[]"
    assert _check(got, "other-app-id", 200, TEXT) == mds_env.image_ids["example.com/busybox"]
    assert got[("no-app", "status")] == "404"
    assert got[("no-path", "status")] == "404"
    signature = _check(got, "sign", 200, TEXT)
    assert len(base64.b64decode(signature, validate=True)) == 64  # HMAC-SHA512
    assert _check(got, "verify", 200, TEXT) == ""
    assert got[("tampered", "status")] == "403"
    assert got[("sign-get", "status")] == "405"


def test_event_handlers_get_the_url_too(mds_env: PodEnv) -> None:
    shared = _probe_dir(mds_env, "handlers", "q $1 pod/uuid\n")
    manifest = mds_env.root / "handlers.json"
    manifest.write_text(
        json.dumps(
            {
                "acVersion": "0.8.11",
                "acKind": "PodManifest",
                "apps": [
                    {
                        "name": "app",
                        "image": {"id": mds_env.image_ids["example.com/busybox"]},
                        "app": {
                            "exec": ["/bin/sh", "/t/probe.sh", "main"],
                            "user": "0",
                            "group": "0",
                            "eventHandlers": [
                                {"name": "pre-start", "exec": ["/bin/sh", "/t/probe.sh", "pre"]},
                                {"name": "post-stop", "exec": ["/bin/sh", "/t/probe.sh", "post"]},
                            ],
                        },
                        "mounts": [{"volume": "t", "path": "/t"}],
                    }
                ],
                "volumes": [{"name": "t", "kind": "host", "source": str(shared)}],
            }
        )
    )
    uuid_file = mds_env.root / "uuid-handlers"
    result = mds_env.run(
        "--net=none", "--uuid-file-save", str(uuid_file), "--pod-manifest", str(manifest)
    )
    assert result.returncode == 0, result.stderr
    got = _answers(result.stdout, "app")
    uuid = uuid_file.read_text().strip()
    for phase in ("pre", "main", "post"):
        assert _check(got, phase, 200, TEXT) == uuid


def _url_of(output: str, app: str) -> str:
    for line in output.splitlines():
        if line.startswith(f"[{app}] URL="):
            return line.split("=", 1)[1]
    raise AssertionError(f"no URL printed: {output!r}")


def test_pods_cannot_reach_each_other_and_unknown_tokens_get_401(mds_env: PodEnv) -> None:
    other = mds_env.start(
        "--net=none",
        "example.com/busybox",
        "--name",
        "secret-app",
        "--exec",
        "/bin/sh",
        "--",
        "-c",
        'echo "URL=$AC_METADATA_URL"; sleep 60',
    )
    other.wait_output("URL=")
    other_url = _url_of(other.stdout, "secret-app")
    other_token = other_url.rsplit("/", 1)[1]
    shared = _probe_dir(
        mds_env,
        "isolation",
        f"""
q own-uuid pod/uuid
q other-app apps/secret-app/image/id
B="${{AC_METADATA_URL%/*}}/not-a-token{other_token[:8]}/acMetadata/v1"
q bad-token pod/uuid
B="${{AC_METADATA_URL%/*}}/acMetadata/v1"
q no-token pod/uuid
grep -l "{other_token}" /proc/[0-9]*/environ 2>/dev/null | sed 's/^/found=/'
echo "searched=done"
""",
    )
    uuid_file = mds_env.root / "uuid-isolation"
    result = mds_env.run(
        *(
            "--net=none",
            "--uuid-file-save",
            str(uuid_file),
            "--volume",
            f"t,kind=host,source={shared}",
        ),
        *("example.com/busybox", "--name", "probe", "--mount", "volume=t,target=/t"),
        *("--exec", "/bin/sh", "--", "/t/probe.sh"),
    )
    assert result.returncode == 0, result.stderr
    got = _answers(result.stdout, "probe")
    assert _check(got, "own-uuid", 200, TEXT) == uuid_file.read_text().strip()
    assert got[("other-app", "status")] == "404"  # app names are the pod's own
    # (busybox wget shows no headers or body of an error: tests/metadata check those)
    assert got[("bad-token", "status")] == got[("no-token", "status")] == "401"
    assert "[probe] searched=done" in result.stdout
    assert "found=" not in result.stdout  # the other pod's token is nowhere in sight
    # Even leaked, a --net=none pod's token is worth nothing on the host's port.
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{other_url}/acMetadata/v1/pod/uuid", timeout=TIMEOUT)
    caught.value.close()  # the error holds the response open
    assert caught.value.code == 401
    mds_env.ok("stop", other.uuid)


def test_signatures_verify_across_pods(mds_env: PodEnv) -> None:
    signer = _probe_dir(
        mds_env,
        "signer",
        'q uuid pod/uuid\nq sign pod/hmac/sign "content=from%20the%20signer"\n',
    )
    result = mds_env.run(
        *("--volume", f"t,kind=host,source={signer}", "example.com/busybox", "--name", "signer"),
        *("--mount", "volume=t,target=/t", "--exec", "/bin/sh", "--", "/t/probe.sh"),
    )
    assert result.returncode == 0, result.stderr
    got = _answers(result.stdout, "signer")
    signer_uuid = _check(got, "uuid", 200, TEXT)
    signature = quote(_check(got, "sign", 200, TEXT), safe="")
    form = f"content=from%20the%20signer&uuid={signer_uuid}&signature={signature}"
    verifier = _probe_dir(
        mds_env,
        "verifier",
        f"""
q good pod/hmac/verify "{form}"
q other-content pod/hmac/verify "{form.replace("signer", "verifier", 1)}"
q own-uuid pod/hmac/verify "{form.replace(signer_uuid, "$(wget -q -O - $B/pod/uuid)")}"
q unknown-uuid pod/hmac/verify "{form.replace(signer_uuid, "00000000-0000-4000-8000-000000000000")}"
q not-base64 pod/hmac/verify "content=x&uuid={signer_uuid}&signature=%25%25%25"
q missing pod/hmac/verify "content=x&uuid={signer_uuid}"
""",
    )
    result = mds_env.run(
        *("--net=none", "--volume", f"t,kind=host,source={verifier}", "example.com/busybox"),
        *("--name", "verifier", "--mount", "volume=t,target=/t"),
        *("--exec", "/bin/sh", "--", "/t/probe.sh"),
    )
    assert result.returncode == 0, result.stderr
    got = _answers(result.stdout, "verifier")
    assert _check(got, "good", 200, TEXT) == ""
    for name in ("other-content", "own-uuid", "unknown-uuid", "not-base64"):
        assert got[(name, "status")] == "403", (name, got)
    assert got[("missing", "status")] == "400"


def _service(env: PodEnv) -> dict[str, Any]:
    result = env.jetpack("metadata-service", "--status", "--format", "json")
    data: dict[str, Any] = json.loads(result.stdout)
    assert (result.returncode == 0) == data["running"], result
    return data


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + TIMEOUT
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, f"process {pid} did not end"
        time.sleep(0.02)


@pytest.mark.parametrize("net", ["host", "none"])
def test_service_killed_and_restarted_while_a_pod_runs(
    make_pod_env: Callable[..., PodEnv], net: str
) -> None:
    env = make_pod_env()
    shared = _probe_dir(
        env,
        "restart",
        """
q before-uuid pod/uuid
q sign pod/hmac/sign "content=kept"
S=$(cat /tmp/b)
U=$(wget -q -O - $B/pod/uuid)
echo "ready=1"
while [ ! -e /t/go ]; do sleep 0.05; done
q after-uuid pod/uuid
q after-verify pod/hmac/verify "content=kept&uuid=$U&signature=$(enc $S)"
q after-sign pod/hmac/sign "content=kept"
""",
    )
    pod = env.start(
        *(f"--net={net}", "--volume", f"t,kind=host,source={shared}", "example.com/busybox"),
        *("--name", "app", "--mount", "volume=t,target=/t"),
        *("--exec", "/bin/sh", "--", "/t/probe.sh"),
    )
    pod.wait_output("ready=1")
    before = _service(env)
    assert before["running"] and before["pods"] == 1
    os.kill(before["pid"], signal.SIGKILL)  # no goodbye: registrations must be on disk
    _wait_gone(before["pid"])
    assert not _service(env)["running"]
    # Another pod's start brings the service back.
    other = env.run("example.com/busybox")
    assert other.returncode == 0, other.stderr
    after = _service(env)
    assert after["running"] and after["pid"] != before["pid"]
    assert after["listen"] == before["listen"]  # the port the running pod was told
    (shared / "go").touch()
    assert pod.wait() == 0, pod.stderr
    got = _answers(pod.stdout, "app")
    uuid = pod.uuid
    assert _check(got, "before-uuid", 200, TEXT) == uuid
    assert _check(got, "after-uuid", 200, TEXT) == uuid
    assert _check(got, "after-verify", 200, TEXT) == ""  # the key survived the restart
    assert _check(got, "after-sign", 200, TEXT) == _check(got, "sign", 200, TEXT)


def test_a_pod_started_with_no_service_starts_it_and_rm_unregisters(
    make_pod_env: Callable[..., PodEnv],
) -> None:
    env = make_pod_env()
    registrations = env.data / "mds" / "pods"
    assert not _service(env)["running"]
    uuid = env.ok("prepare", "example.com/busybox").stdout.strip()
    status = _service(env)
    assert status["running"] and status["pods"] == 1
    registration = registrations / f"{uuid}.json"
    assert registration.stat().st_mode & 0o777 == 0o600
    assert (env.data / "mds").stat().st_mode & 0o777 == 0o700
    # The service stops; run-prepared brings it back before the pod starts.
    env.ok("metadata-service", "--stop")
    assert not _service(env)["running"]
    result = env.jetpack("run-prepared", uuid)
    assert result.returncode == 0, result.stderr
    assert _service(env)["running"]
    env.ok("rm", uuid)
    assert not registration.exists()
    assert _service(env)["pods"] == 0
    # Removed while the service is down: the file goes all the same.
    uuid = env.ok("prepare", "example.com/busybox").stdout.strip()
    env.ok("metadata-service", "--stop")
    env.ok("rm", uuid)
    assert not (registrations / f"{uuid}.json").exists()


def test_no_mds_register_runs_without_url_or_service(
    make_pod_env: Callable[..., PodEnv],
) -> None:
    env = make_pod_env()
    result = env.run("--no-mds-register", "example.com/busybox", "--exec", "/bin/env")
    assert result.returncode == 0, result.stderr
    assert "AC_METADATA_URL" not in result.stdout
    assert not _service(env)["running"]
    # ... and so does a host whose configuration says so.
    env.config.write_text(env.config_text + "register = false\n")
    result = env.run("example.com/busybox", "--exec", "/bin/env")
    assert result.returncode == 0, result.stderr
    assert "AC_METADATA_URL" not in result.stdout
    assert not _service(env)["running"]


def test_a_service_that_cannot_start_fails_the_pod_in_one_line(
    make_pod_env: Callable[..., PodEnv],
) -> None:
    env = make_pod_env()
    with subprocess.Popen(
        [
            str(JETPACK.parent / "python"),
            "-c",
            "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); "
            "print(s.getsockname()[1], flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    ) as blocker:
        try:
            assert blocker.stdout is not None
            port = blocker.stdout.readline().strip()
            env.config.write_text(f'[metadata]\nlisten = "127.0.0.1:{port}"\n')
            result = env.run("example.com/busybox")
            assert result.returncode == 1
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1, result.stderr
            assert "cannot start the metadata service" in lines[0]
            assert f"127.0.0.1:{port}" in lines[0]
            assert "Traceback" not in result.stderr
            assert env.pod_entries() == set()  # nothing of the pod is left
        finally:
            blocker.kill()


def test_a_stuck_service_does_not_hold_up_the_pod(make_pod_env: Callable[..., PodEnv]) -> None:
    """PID 1 never waits on the service: with it stopped (SIGSTOP), a pod that floods its
    metadata port still prints, ends and is reaped at once (requests just fail)."""
    env = make_pod_env()
    pod = env.start(
        *("--net=none", "example.com/busybox", "--exec", "/bin/sh", "--", "-c"),
        "echo ready; sleep 1; "
        'for i in $(seq 200); do wget -q -T 2 -O /dev/null "$AC_METADATA_URL/x" & done; '
        "wait; echo done",
    )
    pod.wait_output("ready")
    pid = _service(env)["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        code = pod.wait(timeout=60)
        elapsed = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    assert code == 0, pod.stderr
    assert "[busybox] done" in pod.stdout
    assert elapsed < 15, elapsed  # was 200 x 0.2 s when PID 1 waited on a full queue


def test_concurrent_first_pods_start_one_service(make_pod_env: Callable[..., PodEnv]) -> None:
    env = make_pod_env()
    procs = [
        subprocess.Popen(
            env.argv("prepare", "example.com/busybox"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [(proc.wait(timeout=TIMEOUT), *proc.communicate()) for proc in procs]
    for code, _out, err in results:
        assert code == 0, err
    status = _service(env)
    assert status["running"] and status["pods"] == 4
    # The ones that lost the race end (after finding the lock taken): one stays.
    deadline = time.monotonic() + TIMEOUT
    while True:
        ps = subprocess.run(["ps", "-ww", "-eo", "stat,args"], capture_output=True, text=True)
        services = [
            line
            for line in ps.stdout.splitlines()
            if "metadata-service" in line
            and str(env.data) in line
            and not line.startswith("Z")
            and "/bin/sh" not in line
        ]
        if len(services) <= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(services) == 1, services


def test_gc_does_not_wait_on_a_stuck_service_for_each_pod(
    make_pod_env: Callable[..., PodEnv],
) -> None:
    env = make_pod_env()
    uuids = [env.ok("prepare", "example.com/busybox").stdout.strip() for _ in range(5)]
    registrations = env.data / "mds" / "pods"
    assert {f"{uuid}.json" for uuid in uuids} <= {p.name for p in registrations.iterdir()}
    pid = _service(env)["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        result = env.jetpack("gc", "--expire-prepared=0s", "--grace-period=0s")
        elapsed = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    assert result.returncode == 0, result.stderr
    assert sorted(
        line.split()[-1] for line in result.stdout.splitlines() if "removed" in line
    ) == sorted(uuids)
    assert list(registrations.iterdir()) == []  # deleted without the service
    assert elapsed < 5, elapsed  # one timeout (1 s), not one per pod
