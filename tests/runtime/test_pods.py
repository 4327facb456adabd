"""Real pods, run through the ``jetpack`` command: the execution environment (appc's, as
issue 6 reads it), the pod commands and the pod lifecycle on disk.

Most tests share one data directory (``pod_env``, module scope): each looks only at the
pods it makes. Tests that collect, count or crash pods, and the storage backend smoke
tests, get a directory of their own (``make_pod_env``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from jetpack.schema.pod import Mount, parse_pod_manifest
from jetpack.schema.types import ACName
from tests.runtime.conftest import PodEnv

pytestmark = pytest.mark.root

BUSYBOX = "example.com/busybox"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NO_SUCH_ID = "sha512-" + "0" * 128


def app_lines(output: str, app: str) -> list[str]:
    """The lines the foreground run echoed for ``app`` (``[app] line``), prefix removed."""
    prefix = f"[{app}] "
    return [line[len(prefix) :] for line in output.splitlines() if line.startswith(prefix)]


def env_of(output: str, app: str) -> dict[str, str]:
    lines = app_lines(output, app)
    pairs = dict(line.split("=", 1) for line in lines)
    assert len(pairs) == len(lines), f"a variable is set twice: {lines}"
    return pairs


def assert_fails_in_one_line(result: subprocess.CompletedProcess[str]) -> str:
    """A failure reported as one ``jetpack: `` line, without traceback; that line."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr
    assert "internal error" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("jetpack: "), result.stderr
    assert result.stdout == ""
    return lines[0]


def ensure_dead(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, f"process {pid} is still alive"
        time.sleep(0.02)


# -- the environment of an app -------------------------------------------------------------


def test_environment_is_exactly_the_specs_and_the_images(pod_env: PodEnv) -> None:
    result = pod_env.run(BUSYBOX, "--exec", "/bin/env")
    assert result.returncode == 0, result.stderr
    env = env_of(result.stdout, "busybox")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/[A-Za-z0-9_-]{32}", env.pop("AC_METADATA_URL"))
    assert env == {
        "PATH": DEFAULT_PATH,
        "AC_APP_NAME": "busybox",
        "container": "jetpack",
        "IMAGE_VAR": "image",
        "OVERRIDE": "image",
    }
    assert result.stderr == ""


def test_set_env_pod_level_overrides_image_and_app_level_overrides_pod(
    pod_env: PodEnv,
) -> None:
    result = pod_env.run(
        *("--set-env", "OVERRIDE=pod", "--set-env", "POD_ONLY=pod"),
        *(BUSYBOX, "--set-env", "OVERRIDE=app", "--set-env", "APP_ONLY=a=b", "--exec", "/bin/env"),
        *("---", BUSYBOX, "--name", "other", "--exec", "/bin/env"),
    )
    assert result.returncode == 0, result.stderr
    common = {"PATH": DEFAULT_PATH, "container": "jetpack", "IMAGE_VAR": "image"}
    busybox, other = env_of(result.stdout, "busybox"), env_of(result.stdout, "other")
    assert busybox.pop("AC_METADATA_URL") == other.pop("AC_METADATA_URL")  # one pod, one URL
    assert busybox == {
        **common,
        "AC_APP_NAME": "busybox",
        "OVERRIDE": "app",
        "POD_ONLY": "pod",
        "APP_ONLY": "a=b",
    }
    assert other == {
        **common,
        "AC_APP_NAME": "other",
        "OVERRIDE": "pod",
        "POD_ONLY": "pod",
    }


def test_working_directory_from_image_option_or_root(pod_env: PodEnv) -> None:
    result = pod_env.run(
        *("example.com/user", "--exec", "/bin/pwd"),
        *("---", BUSYBOX, "--name", "etc", "--working-dir", "/etc", "--exec", "/bin/pwd"),
        *("---", BUSYBOX, "--name", "plain", "--exec", "/bin/pwd"),
    )
    assert result.returncode == 0, result.stderr
    assert app_lines(result.stdout, "user") == ["/home/user"]
    assert app_lines(result.stdout, "etc") == ["/etc"]
    assert app_lines(result.stdout, "plain") == ["/"]


def test_missing_working_directory_fails_the_app_clearly(pod_env: PodEnv) -> None:
    result = pod_env.run(BUSYBOX, "--working-dir", "/does/not/exist", "--exec", "/bin/pwd")
    assert result.returncode != 0
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if "/does/not/exist" in line]
    assert len(errors) == 1, result.stderr
    assert "working directory /does/not/exist" in errors[0]
    assert "No such file or directory" in errors[0]


def test_user_and_group_by_name_number_and_path(pod_env: PodEnv) -> None:
    result = pod_env.run(
        *(BUSYBOX, "--name", "names", "--user", "user", "--group", "staff", "--exec", "/bin/id"),
        *("---", BUSYBOX, "--name", "numbers", "--user", "1234", "--group", "4321"),
        *("--exec", "/bin/id"),
        *("---", BUSYBOX, "--name", "path", "--user", "/home/user", "--group", "/home/user"),
        *("--exec", "/bin/id"),
    )
    assert result.returncode == 0, result.stderr
    assert app_lines(result.stdout, "names") == ["uid=1000(user) gid=50(staff)"]
    assert app_lines(result.stdout, "numbers") == ["uid=1234 gid=4321"]
    assert app_lines(result.stdout, "path") == ["uid=1000(user) gid=100(users)"]


def test_non_root_user_cannot_write_a_root_owned_file(pod_env: PodEnv) -> None:
    script = (
        "echo x >> /etc/passwd; echo passwd=$?; touch /home/user/mine; echo home=$?; "
        "ls -ln /home/user/mine | (read mode links uid gid rest; echo $uid:$gid); "
        "cat /etc/passwd"
    )
    result = pod_env.run(
        BUSYBOX, "--user", "user", "--group", "users", "--exec", "/bin/sh", "--", "-c", script
    )
    assert result.returncode == 0, result.stderr
    passwd = [
        "root:x:0:0:root:/root:/bin/sh",
        "user:x:1000:100:user:/home/user:/bin/sh",
    ]
    assert app_lines(result.stdout, "busybox") == ["passwd=1", "home=0", "1000:100", *passwd]
    assert "/etc/passwd: Permission denied" in result.stderr


def test_supplementary_gids_are_visible(pod_env: PodEnv) -> None:
    result = pod_env.run(
        "example.com/user",
        *("--exec", "/bin/sh", "--", "-c", "id; grep Groups: /proc/self/status"),
    )
    assert result.returncode == 0, result.stderr
    lines = app_lines(result.stdout, "user")
    assert lines[0] == "uid=1000(user) gid=100(users) groups=50(staff),4242"
    assert lines[1].split() == ["Groups:", "50", "4242"]
    assert len(lines) == 2


# -- volumes ---------------------------------------------------------------------------


def test_two_apps_share_an_empty_volume(pod_env: PodEnv) -> None:
    writer = "echo from-writer > /shared/.msg && mv /shared/.msg /shared/msg"
    # The reader waits for the writer's file (at most 10 s), whichever app starts first.
    reader = (
        "i=0; while [ ! -e /shared/msg ]; do i=$((i+1)); "
        "if [ $i -gt 200 ]; then echo timeout; exit 9; fi; sleep 0.05; done; "
        "cat /shared/msg; ls -ld /shared | (read mode rest; echo $mode)"
    )
    result = pod_env.run(
        "--volume",
        "shared,kind=empty",
        *(BUSYBOX, "--name", "writer", "--mount", "volume=shared,target=/shared"),
        *("--exec", "/bin/sh", "--", "-c", writer),
        *("---", BUSYBOX, "--name", "reader", "--mount", "volume=shared,target=/shared"),
        *("--exec", "/bin/sh", "--", "-c", reader),
    )
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert app_lines(result.stdout, "reader") == ["from-writer", "drwxr-xr-x"]
    assert app_lines(result.stdout, "writer") == []


def test_host_volume_read_only_and_read_write(pod_env: PodEnv, tmp_path: Path) -> None:
    source = tmp_path / "host"
    source.mkdir()
    (source / "file").write_text("host-data\n")
    script = (
        "cat /ro/file; touch /ro/from-ro; echo ro=$?; touch /rw/from-rw; echo rw=$?; "
        "grep -c ' /ro ' /proc/mounts; grep ' /ro ' /proc/mounts | (read a b c opts rest; "
        "echo ${opts%%,*})"
    )
    result = pod_env.run(
        "--volume",
        f"ro,kind=host,source={source},readOnly=true",
        "--volume",
        f"rw,kind=host,source={source}",
        BUSYBOX,
        *("--mount", "volume=ro,target=/ro", "--mount", "volume=rw,target=/rw"),
        *("--exec", "/bin/sh", "--", "-c", script),
    )
    assert result.returncode == 0, result.stderr
    assert app_lines(result.stdout, "busybox") == ["host-data", "ro=1", "rw=0", "1", "ro"]
    assert "Read-only file system" in result.stderr
    assert sorted(p.name for p in source.iterdir()) == ["file", "from-rw"]


def test_missing_host_volume_source_fails_and_leaves_nothing(
    pod_env: PodEnv, tmp_path: Path
) -> None:
    pods_before, mounts_before = pod_env.pod_entries(), pod_env.mounts()
    missing = tmp_path / "no-such-dir"
    result = pod_env.run(
        "--volume",
        f"v,kind=host,source={missing}",
        *(BUSYBOX, "--mount", "volume=v,target=/v", "--exec", "/bin/true"),
    )
    line = assert_fails_in_one_line(result)
    assert str(missing) in line
    assert "volume v" in line
    assert pod_env.pod_entries() == pods_before
    assert pod_env.mounts() == mounts_before


# -- event handlers and exit codes -------------------------------------------------------


def test_event_handlers_run_in_order_in_the_apps_rootfs(pod_env: PodEnv) -> None:
    result = pod_env.run("example.com/handlers")
    assert result.returncode == 0, result.stderr
    # post-stop prints /order, which pre-start and main wrote in the same rootfs.
    assert app_lines(result.stdout, "handlers") == [
        "pre-start",
        "pre-start-done",
        "main",
        "post-stop",
    ]


def test_exit_code_is_the_apps(pod_env: PodEnv) -> None:
    result = pod_env.run(BUSYBOX, "--exec", "/bin/sh", "--", "-c", "exit 3")
    assert result.returncode == 3


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_exit_code_of_an_app_killed_by_a_signal(pod_env: PodEnv, signum: int) -> None:
    result = pod_env.run(BUSYBOX, "--exec", "/bin/sh", "--", "-c", f"kill -{signum} $$")
    assert result.returncode == 128 + signum


def test_exit_code_of_a_pod_with_a_failed_app(pod_env: PodEnv) -> None:
    result = pod_env.run(
        "--uuid-file-save",
        str(pod_env.root / "multi.uuid"),
        *(BUSYBOX, "--name", "good", "--exec", "/bin/true"),
        *("---", BUSYBOX, "--name", "bad", "--exec", "/bin/sh", "--", "-c", "exit 4"),
    )
    assert result.returncode != 0
    uuid = (pod_env.root / "multi.uuid").read_text().strip()
    current = pod_env.status(uuid)
    codes = {name: app["exit_code"] for name, app in current["apps"].items()}
    assert codes == {"good": 0, "bad": 4}
    assert current["exit_code"] == result.returncode


# -- isolation ---------------------------------------------------------------------------


def test_pod_sees_only_its_own_processes(pod_env: PodEnv) -> None:
    result = pod_env.run(BUSYBOX, "--exec", "/bin/ps", "--", "-o", "pid,args")
    assert result.returncode == 0, result.stderr
    header, *rows = app_lines(result.stdout, "busybox")
    assert header.split() == ["PID", "COMMAND"]
    processes = {int(row.split(None, 1)[0]): row.split(None, 1)[1] for row in rows}
    assert len(processes) == 2, rows
    assert 1 in processes  # the supervisor
    (ps_pid,) = set(processes) - {1}
    assert processes[ps_pid] == "/bin/ps -o pid,args"


def test_hostname_from_option(pod_env: PodEnv) -> None:
    result = pod_env.run("--hostname", "pod.example", BUSYBOX, "--exec", "/bin/hostname")
    assert result.returncode == 0, result.stderr
    assert app_lines(result.stdout, "busybox") == ["pod.example"]


def test_hostname_derived_from_the_uuid(pod_env: PodEnv) -> None:
    uuid_file = pod_env.root / "hostname.uuid"
    result = pod_env.run(
        "--uuid-file-save",
        str(uuid_file),
        *(BUSYBOX, "--exec", "/bin/sh", "--", "-c", "hostname; grep -c $(hostname) /etc/hosts"),
    )
    assert result.returncode == 0, result.stderr
    uuid = uuid_file.read_text().strip()
    assert app_lines(result.stdout, "busybox") == [f"jetpack-{uuid}", "2"]
    assert os.uname().nodename != f"jetpack-{uuid}"


def test_net_none_has_only_loopback_and_it_is_up(pod_env: PodEnv) -> None:
    result = pod_env.run(
        "--net=none", BUSYBOX, "--exec", "/bin/sh", "--", "-c", "ls /sys/class/net; ip -o link"
    )
    assert result.returncode == 0, result.stderr
    lines = app_lines(result.stdout, "busybox")
    assert lines[0] == "lo"
    assert len(lines) == 2, lines
    name, flags = lines[1].split()[1:3]
    assert name == "lo:"
    assert "UP" in flags.strip("<>").split(","), flags


def test_net_host_sees_the_hosts_interfaces(pod_env: PodEnv) -> None:
    result = pod_env.run("--net=host", BUSYBOX, "--exec", "/bin/ls", "--", "-1", "/sys/class/net")
    assert result.returncode == 0, result.stderr
    assert app_lines(result.stdout, "busybox") == sorted(
        p.name for p in Path("/sys/class/net").iterdir()
    )


def test_readonly_rootfs(pod_env: PodEnv) -> None:
    script = (
        "touch /new; echo root=$?; touch /data/new; echo volume=$?; "
        "grep ' / ' /proc/mounts | (read a b c opts rest; echo ${opts%%,*})"
    )
    result = pod_env.run(
        "example.com/volume", "--readonly-rootfs", "--exec", "/bin/sh", "--", "-c", script
    )
    assert result.returncode == 0, result.stderr
    assert app_lines(result.stdout, "volume") == ["root=1", "volume=0", "ro"]
    assert "/new: Read-only file system" in result.stderr
    writable = pod_env.run(BUSYBOX, "--exec", "/bin/sh", "--", "-c", "touch /new; echo $?")
    assert app_lines(writable.stdout, "busybox") == ["0"]


def test_dev_hosts_and_resolv_conf(pod_env: PodEnv) -> None:
    script = (
        "ls /dev; echo ---; ls -l /dev/null | (read mode links u g major minor rest; "
        "echo $mode $major$minor); cat /etc/hosts; cat /etc/resolv.conf"
    )
    result = pod_env.run(
        *("--hostname", "dev.example", "--dns", "192.0.2.53", "--dns", "2001:db8::53"),
        *(BUSYBOX, "--exec", "/bin/sh", "--", "-c", script),
    )
    assert result.returncode == 0, result.stderr
    lines = app_lines(result.stdout, "busybox")
    devices = set(lines[: lines.index("---")])
    required = {"console", "full", "null", "ptmx", "pts", "random", "shm", "tty", "urandom"}
    assert required | {"zero", "mqueue"} <= devices, devices
    assert "crw-rw-rw- 1,3" in lines
    assert "127.0.0.1\tlocalhost localhost.localdomain dev.example" in lines
    assert lines[-2:] == ["nameserver 192.0.2.53", "nameserver 2001:db8::53"]


# -- stop, enter ---------------------------------------------------------------------------


def test_stop_terminates_the_pod_with_sigterm(pod_env: PodEnv) -> None:
    pod = pod_env.start(BUSYBOX, "--exec", "/bin/sleep", "--", "1000")
    uuid = pod.uuid
    pod_env.wait_running(uuid)
    started = time.monotonic()
    result = pod_env.jetpack("stop", uuid)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{uuid}\n"
    assert time.monotonic() - started < 5  # SIGTERM did it, not the 10 s SIGKILL timeout
    assert pod.wait() == 128 + signal.SIGTERM
    current = pod_env.status(uuid)
    assert current["state"] == "exited"
    assert current["exit_code"] == 128 + signal.SIGTERM


def test_stop_force_kills_an_app_that_ignores_sigterm(pod_env: PodEnv) -> None:
    pod = pod_env.start(
        BUSYBOX, "--exec", "/bin/sh", "--", "-c", "trap '' TERM; echo ready; sleep 1000"
    )
    uuid = pod.uuid
    pod.wait_output("[busybox] ready\n")
    pid = pod_env.status(uuid)["pid"]
    started = time.monotonic()
    result = pod_env.jetpack("stop", "--force", uuid)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 5
    assert pod.wait() == 128 + signal.SIGKILL
    ensure_dead(pid)
    assert pod_env.status(uuid)["state"] == "exited"


def test_stop_kills_after_the_timeout(pod_env: PodEnv) -> None:
    pod = pod_env.start(
        BUSYBOX, "--exec", "/bin/sh", "--", "-c", "trap '' TERM; echo ready; sleep 1000"
    )
    uuid = pod.uuid
    pod.wait_output("[busybox] ready\n")
    started = time.monotonic()
    result = pod_env.jetpack("stop", "--timeout", "1s", uuid)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert 1 <= elapsed < 8
    assert pod.wait() == 128 + signal.SIGKILL


def test_enter_runs_a_command_inside_a_running_pod(pod_env: PodEnv) -> None:
    pod = pod_env.start(
        *("--hostname", "entered.example", BUSYBOX),
        *("--exec", "/bin/sh", "--", "-c", "echo inside > /marker; echo ready; sleep 1000"),
    )
    uuid = pod.uuid
    pod.wait_output("[busybox] ready\n")
    script = "hostname; cat /marker; echo $AC_APP_NAME; ps -o pid | grep -c '^ *1$'"
    result = pod_env.jetpack("enter", uuid, "/bin/sh", "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["entered.example", "inside", "busybox", "1"]
    assert pod_env.jetpack("enter", uuid[:8], "/bin/sh", "-c", "exit 5").returncode == 5
    assert pod_env.ok("stop", "--force", uuid).stdout == f"{uuid}\n"
    pod.wait()


def test_enter_picks_the_app_of_a_multi_app_pod(pod_env: PodEnv) -> None:
    loop = "echo ready; sleep 1000"
    pod = pod_env.start(
        *(BUSYBOX, "--name", "one", "--exec", "/bin/sh", "--", "-c", loop),
        *("---", BUSYBOX, "--name", "two", "--exec", "/bin/sh", "--", "-c", f"touch /two; {loop}"),
    )
    uuid = pod.uuid
    pod.wait_output("[one] ready\n")
    pod.wait_output("[two] ready\n")
    result = pod_env.jetpack("enter", "--app", "two", uuid, "/bin/sh", "-c", "ls /two; env")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "/two"
    assert "AC_APP_NAME=two" in lines[1:]
    refused = pod_env.jetpack("enter", uuid, "/bin/true")
    line = assert_fails_in_one_line(refused)
    assert "--app" in line
    pod_env.ok("stop", uuid)
    pod.wait()


# -- prepare, list, status, logs, cat-manifest, rm ---------------------------------------------


def test_prepare_then_run_prepared(pod_env: PodEnv) -> None:
    prepared = pod_env.ok(
        "prepare", BUSYBOX, "--exec", "/bin/sh", "--", "-c", "echo prepared-ran; exit 6"
    )
    uuid = prepared.stdout.strip()
    assert prepared.stdout == f"{uuid}\n"
    assert len(uuid) == 36
    current = pod_env.status(uuid)
    assert current["state"] == "prepared"
    assert current["apps"] == {"busybox": {"state": "prepared"}}
    assert current["exit_code"] is None
    assert f"prepared/{uuid}" in pod_env.pod_entries()

    result = pod_env.jetpack("run-prepared", uuid)
    assert result.returncode == 6
    assert app_lines(result.stdout, "busybox") == ["prepared-ran"]
    current = pod_env.status(uuid)
    assert current["state"] == "exited"
    assert current["exit_code"] == 6
    assert current["apps"]["busybox"]["exit_code"] == 6

    again = pod_env.jetpack("run-prepared", uuid)
    line = assert_fails_in_one_line(again)
    assert line.endswith("it already ran (prepare a new one)")


def test_list_and_status_report_running_and_exited_pods_without_blocking(
    pod_env: PodEnv,
) -> None:
    exited = pod_env.jetpack("prepare", BUSYBOX, "--exec", "/bin/sh", "--", "-c", "exit 3")
    exited_uuid = exited.stdout.strip()
    assert pod_env.jetpack("run-prepared", exited_uuid).returncode == 3
    pod = pod_env.start(BUSYBOX, "--exec", "/bin/sleep", "--", "1000")
    uuid = pod.uuid
    pod_env.wait_running(uuid)

    # The running pod holds its lock: list and status must not wait for it (a blocked
    # command would hit the timeout).
    listed = pod_env.ok("list", "--format", "json", timeout=10)
    by_uuid = {p["uuid"]: p for p in json.loads(listed.stdout)}
    running = by_uuid[uuid]
    assert running["state"] == "running"
    assert running["exit_code"] is None
    assert running["apps"]["busybox"]["state"] == "running"
    assert running["images"] == {"busybox": pod_env.image_ids[BUSYBOX]}
    # pid is the pod's PID 1 as the host sees it.
    nspid = Path(f"/proc/{running['pid']}/status").read_text().split("NSpid:")[1].split("\n")[0]
    assert nspid.split()[-1] == "1"
    assert by_uuid[exited_uuid]["state"] == "exited"
    assert by_uuid[exited_uuid]["exit_code"] == 3
    assert by_uuid[exited_uuid]["pid"] is None

    text = pod_env.ok("status", uuid, timeout=10).stdout.splitlines()
    assert text == [
        f"uuid={uuid}",
        "state=running",
        f"created={running['created']}",
        f"started={running['started']}",
        f"pid={running['pid']}",
        "app-busybox=running",
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", running["created"])

    table = pod_env.ok("list", timeout=10).stdout.splitlines()
    assert table[0].split() == ["UUID", "APP", "IMAGE", "ID", "STATE", "CREATED", "EXIT"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    short_id = pod_env.image_ids[BUSYBOX][: len("sha512-") + 12]
    assert rows[uuid[:8]] == [uuid[:8], "busybox", short_id, "running", running["created"]]
    created = by_uuid[exited_uuid]["created"]
    assert rows[exited_uuid[:8]] == [exited_uuid[:8], "busybox", short_id, "exited", created, "3"]
    full = pod_env.ok("list", "--full").stdout
    assert uuid in full
    assert pod_env.image_ids[BUSYBOX] in full

    timed_out = pod_env.jetpack("status", "--wait=0.3s", uuid)
    assert "timed out" in assert_fails_in_one_line(timed_out)

    pod_env.ok("stop", uuid)
    waited = pod_env.ok("status", "--wait", "--format", "json", uuid)
    final = json.loads(waited.stdout)
    assert final["state"] == "exited"
    assert final["exit_code"] == 128 + signal.SIGTERM
    assert final["pid"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", final["finished"])
    assert pod.wait() == 128 + signal.SIGTERM
    text = pod_env.ok("status", uuid).stdout.splitlines()
    assert "state=exited" in text
    assert f"exit-code={128 + signal.SIGTERM}" in text
    assert f"app-busybox-exit-code={128 + signal.SIGTERM}" in text


def test_logs_of_every_app_and_of_one(pod_env: PodEnv) -> None:
    uuid_file = pod_env.root / "logs.uuid"
    result = pod_env.run(
        "--uuid-file-save",
        str(uuid_file),
        *(BUSYBOX, "--name", "alpha", "--exec", "/bin/sh", "--", "-c", "echo a1; echo a2"),
        *("---", BUSYBOX, "--name", "beta", "--exec", "/bin/sh", "--"),
        *("-c", "echo b-out; sleep 0.1; echo b-err >&2"),
    )
    assert result.returncode == 0, result.stderr
    assert app_lines(result.stdout, "alpha") == ["a1", "a2"]
    assert app_lines(result.stdout, "beta") == ["b-out"]
    assert app_lines(result.stderr, "beta") == ["b-err"]
    uuid = uuid_file.read_text().strip()

    logs = pod_env.ok("logs", uuid).stdout.splitlines()
    assert sorted(logs) == ["[alpha] a1", "[alpha] a2", "[beta] b-err", "[beta] b-out"]
    assert logs.index("[alpha] a1") < logs.index("[alpha] a2")
    assert pod_env.ok("logs", "--app", "beta", uuid).stdout == "b-out\nb-err\n"
    assert pod_env.ok("logs", "--app", "alpha", uuid).stdout == "a1\na2\n"
    assert pod_env.ok("logs", "--follow", "--app", "alpha", uuid).stdout == "a1\na2\n"
    missing = pod_env.jetpack("logs", "--app", "gamma", uuid)
    assert "no app gamma" in assert_fails_in_one_line(missing)


def test_logs_follow_a_running_pod_until_it_exits(pod_env: PodEnv) -> None:
    pod = pod_env.start(
        BUSYBOX, "--exec", "/bin/sh", "--", "-c", "echo first; sleep 0.5; echo second"
    )
    uuid = pod.uuid
    pod.wait_output("[busybox] first\n")
    followed = pod_env.ok("logs", "--follow", uuid)
    assert followed.stdout == "first\nsecond\n"
    assert pod.wait() == 0


def test_cat_manifest_has_the_implied_empty_volume(pod_env: PodEnv) -> None:
    prepared = pod_env.ok("prepare", "example.com/volume")
    uuid = prepared.stdout.strip()
    text = pod_env.ok("cat-manifest", uuid).stdout
    manifest = parse_pod_manifest(text.encode())
    assert [(str(v.name), v.kind) for v in manifest.volumes] == [("data", "empty")]
    (app,) = manifest.apps
    assert str(app.name) == "volume"
    assert str(app.image.id) == pod_env.image_ids["example.com/volume"]
    assert app.mounts == (Mount(volume=ACName("data"), path="/data"),)
    assert json.loads(text)["acKind"] == "PodManifest"
    ran = pod_env.jetpack("run-prepared", uuid)
    assert ran.returncode == 0, ran.stderr
    assert pod_env.ok("rm", uuid).stdout == f"{uuid}\n"


def test_rm_refuses_a_running_pod_and_removes_an_exited_one(pod_env: PodEnv) -> None:
    pod = pod_env.start(BUSYBOX, "--exec", "/bin/sleep", "--", "1000")
    uuid = pod.uuid
    pod_env.wait_running(uuid)
    refused = pod_env.jetpack("rm", uuid)
    line = assert_fails_in_one_line(refused)
    assert "running" in line
    assert pod_env.status(uuid)["state"] == "running"
    assert f"run/{uuid}" in pod_env.pod_entries()

    pod_env.ok("stop", uuid)
    pod.wait()
    data_dir = pod_env.pods_dir / "data" / uuid
    assert any(m.startswith(str(data_dir) + "/") for m in pod_env.mounts())
    assert pod_env.ok("rm", uuid).stdout == f"{uuid}\n"
    assert not any(uuid in entry for entry in pod_env.pod_entries())
    assert not any(uuid in mount for mount in pod_env.mounts())
    gone = pod_env.jetpack("status", uuid)
    assert f"no pod {uuid}" in assert_fails_in_one_line(gone)


# -- garbage collection ----------------------------------------------------------------------


def test_gc_marks_exited_pods_then_removes_them_after_the_grace_period(
    make_pod_env: Callable[..., PodEnv],
) -> None:
    env = make_pod_env()
    mounts_before = env.mounts()
    prepared = env.ok("prepare", BUSYBOX, "--exec", "/bin/sh", "--", "-c", "exit 2")
    uuid = prepared.stdout.strip()
    assert env.jetpack("run-prepared", uuid).returncode == 2
    kept = env.ok("prepare", BUSYBOX).stdout.strip()  # prepared, never run: not garbage yet
    assert env.mounts() != mounts_before

    marked = env.ok("gc", "--mark-only")
    assert marked.stdout == f"marked {uuid} as garbage\n"
    current = env.status(uuid)
    assert current["state"] == "exited-garbage"
    assert current["exit_code"] == 2
    assert env.ok("gc").stdout == ""  # within the 30 min grace period
    assert f"exited-garbage/{uuid}" in env.pod_entries()

    removed = env.ok("gc", "--grace-period", "0s")
    assert removed.stdout == f"removed pod {uuid}\n"
    assert env.pod_entries() == {f"prepared/{kept}", f"data/{kept}"}
    assert env.status(kept)["state"] == "prepared"

    expired = env.ok("gc", "--expire-prepared", "0s")
    assert expired.stdout == f"marked {kept} as garbage\nremoved pod {kept}\n"
    assert env.pod_entries() == set()
    assert env.mounts() == mounts_before


def test_gc_removes_a_pod_whose_stage1_crashed(make_pod_env: Callable[..., PodEnv]) -> None:
    env = make_pod_env()
    mounts_before = env.mounts()
    crashed = env.start(BUSYBOX, "--exec", "/bin/sh", "--", "-c", "echo ready; sleep 1000")
    alive = env.start(BUSYBOX, "--exec", "/bin/sleep", "--", "1000")
    crashed_uuid, alive_uuid = crashed.uuid, alive.uuid
    crashed.wait_output("[busybox] ready\n")
    env.wait_running(alive_uuid)
    supervisor = env.status(crashed_uuid)["pid"]

    # Both stage1 processes die at once, as in a crash: the outside one, and PID 1.
    os.kill(crashed.proc.pid, signal.SIGKILL)
    os.kill(supervisor, signal.SIGKILL)
    assert crashed.wait() == -signal.SIGKILL
    ensure_dead(supervisor)
    assert env.status(crashed_uuid)["state"] == "exited"

    collected = env.ok("gc", "--grace-period", "0s")
    assert collected.stdout == f"marked {crashed_uuid} as garbage\nremoved pod {crashed_uuid}\n"
    assert not any(crashed_uuid in entry for entry in env.pod_entries())
    assert not any(crashed_uuid in mount for mount in env.mounts())
    assert env.status(alive_uuid)["state"] == "running"  # gc never touches a running pod

    env.ok("stop", alive_uuid)
    alive.wait()
    collected = env.ok("gc", "--grace-period", "0s")
    assert collected.stdout == f"marked {alive_uuid} as garbage\nremoved pod {alive_uuid}\n"
    assert env.pod_entries() == set()
    assert env.mounts() == mounts_before


def test_gc_removes_a_pod_abandoned_while_being_prepared(
    make_pod_env: Callable[..., PodEnv],
) -> None:
    env = make_pod_env()
    mounts_before = env.mounts()
    uuid = env.ok("prepare", BUSYBOX).stdout.strip()
    # What a stage0 killed in the middle of prepare leaves: the pod in prepare/, unlocked.
    (env.pods_dir / "prepared" / uuid).rename(env.pods_dir / "prepare" / uuid)
    assert env.status(uuid)["state"] == "abandoned"
    assert env.mounts() != mounts_before

    collected = env.ok("gc")
    assert collected.stdout == f"marked {uuid} as garbage\nremoved pod {uuid}\n"
    assert env.pod_entries() == set()
    assert env.mounts() == mounts_before


def test_image_gc_keeps_the_images_of_existing_pods(
    make_pod_env: Callable[..., PodEnv],
    standard_acis: dict[str, Path],
    busybox_aci: Callable[..., Path],
) -> None:
    images = {
        BUSYBOX: standard_acis[BUSYBOX],
        "example.com/user": standard_acis["example.com/user"],
        "example.com/unused": busybox_aci(
            "example.com/unused", {"exec": ["/bin/true"], "user": "0", "group": "0"}
        ),
    }
    env = make_pod_env(images=images)

    def stored() -> set[str]:
        listed = env.ok("image", "list", "--format", "json").stdout
        return {image["name"] for image in json.loads(listed)}

    exited = env.ok("prepare", BUSYBOX).stdout.strip()
    assert env.jetpack("run-prepared", exited).returncode == 0
    prepared = env.ok("prepare", "example.com/user").stdout.strip()

    env.ok("image", "gc", "--grace-period", "0s")
    assert stored() == {BUSYBOX, "example.com/user"}
    assert env.jetpack("run-prepared", prepared).returncode == 0  # its tree is still there

    env.ok("rm", exited, prepared)
    env.ok("image", "gc", "--grace-period", "0s")
    assert stored() == set()
    assert env.mounts() == []


# -- many pods ---------------------------------------------------------------------------------


def test_twenty_pods_started_concurrently_all_succeed(
    make_pod_env: Callable[..., PodEnv], standard_acis: dict[str, Path]
) -> None:
    # A fresh store: the 20 pods also race to render the image's tree.
    env = make_pod_env(images={BUSYBOX: standard_acis[BUSYBOX]})

    def run(i: int) -> subprocess.CompletedProcess[str]:
        script = f"echo pod-{i}; echo $AC_APP_NAME"
        return env.run(BUSYBOX, "--exec", "/bin/sh", "--", "-c", script, timeout=120)

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(run, range(20)))
    for i, result in enumerate(results):
        assert result.returncode == 0, (i, result.stdout, result.stderr)
        assert result.stdout == f"[busybox] pod-{i}\n[busybox] busybox\n", result.stderr
        assert result.stderr == ""
    listed = json.loads(env.ok("list", "--format", "json").stdout)
    assert len(listed) == 20
    assert {(p["state"], p["exit_code"]) for p in listed} == {("exited", 0)}


# -- failures that leave nothing behind -----------------------------------------------------------


def _pod_manifest(
    image_id: str, *, mounts: tuple[dict[str, str], ...] = (), **app: object
) -> dict[str, object]:
    defaults: dict[str, object] = {"exec": ["/bin/true"], "user": "0", "group": "0"}
    return {
        "acKind": "PodManifest",
        "acVersion": "0.8.11",
        "apps": [
            {
                "name": "manual",
                "image": {"id": image_id},
                "app": defaults | app,
                "mounts": list(mounts),
            }
        ],
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("{not json", "invalid JSON", id="invalid-json"),
        pytest.param(
            json.dumps({**_pod_manifest(NO_SUCH_ID), "acKind": "ImageManifest"}),
            "PodManifest",
            id="wrong-acKind",
        ),
        pytest.param(json.dumps(_pod_manifest(NO_SUCH_ID)), "not in the store", id="unknown-image"),
    ],
)
def test_bad_pod_manifest_fails_in_one_line_and_leaves_nothing(
    pod_env: PodEnv, tmp_path: Path, text: str, expected: str
) -> None:
    pods_before, mounts_before = pod_env.pod_entries(), pod_env.mounts()
    manifest = tmp_path / "pod.json"
    manifest.write_text(text)
    for command in ("run", "prepare"):
        result = pod_env.jetpack(command, "--pod-manifest", str(manifest))
        line = assert_fails_in_one_line(result)
        assert expected in line
        assert result.returncode == 1
    assert pod_env.pod_entries() == pods_before
    assert pod_env.mounts() == mounts_before


@pytest.mark.parametrize(
    "words",
    [
        pytest.param(["--pull-policy", "never", "example.com/nothere"], id="not-in-store"),
        pytest.param(["nothere.invalid/app"], id="not-discoverable"),
        pytest.param([NO_SUCH_ID], id="unknown-id"),
        pytest.param(["--pull-policy", "never", NO_SUCH_ID], id="unknown-id-never"),
    ],
)
def test_missing_image_fails_in_one_line_and_leaves_nothing(
    pod_env: PodEnv, words: list[str]
) -> None:
    pods_before, mounts_before = pod_env.pod_entries(), pod_env.mounts()
    result = pod_env.run(*words)
    line = assert_fails_in_one_line(result)
    assert words[-1] in line
    assert pod_env.pod_entries() == pods_before
    assert pod_env.mounts() == mounts_before


def test_valid_pod_manifest_runs(pod_env: PodEnv, tmp_path: Path) -> None:
    manifest = _pod_manifest(
        pod_env.image_ids[BUSYBOX],
        exec=["/bin/sh", "-c", "echo $GREETING > /work/f; cat /work/f; hostname; id"],
        user="user",
        group="staff",
        environment=[{"name": "GREETING", "value": "hello-manifest"}],
        mounts=({"volume": "work", "path": "/work"},),
    )
    manifest["volumes"] = [{"name": "work", "kind": "empty", "mode": "0777"}]
    path = tmp_path / "pod.json"
    path.write_text(json.dumps(manifest))
    result = pod_env.run("--hostname", "manifest.example", "--pod-manifest", str(path))
    assert result.returncode == 0, result.stderr
    assert app_lines(result.stdout, "manual") == [
        "hello-manifest",
        "manifest.example",
        "uid=1000(user) gid=50(staff)",
    ]


# -- storage backends ----------------------------------------------------------------------------


def _zfs_datasets(dataset: str) -> list[str]:
    listed = subprocess.run(
        ["zfs", "list", "-H", "-r", "-t", "all", "-o", "name", dataset],
        capture_output=True,
        text=True,
        check=True,
    )
    return listed.stdout.split()


@pytest.mark.parametrize("backend", ["overlay", "copy", pytest.param("zfs", marks=pytest.mark.zfs)])
def test_storage_backend_runs_a_pod_and_rm_leaves_nothing(
    make_pod_env: Callable[..., PodEnv],
    standard_acis: dict[str, Path],
    request: pytest.FixtureRequest,
    backend: str,
) -> None:
    config, cleanup, dataset = "", None, None
    if backend == "copy":
        config = '[storage]\nbackend = "copy"\n'
    elif backend == "zfs":
        pool = request.getfixturevalue("zfs_pool")
        dataset = f"{pool}/runtime{os.getpid()}"
        config = f'[storage]\nbackend = "zfs"\n\n[storage.zfs]\ndataset = "{dataset}"\n'

        def cleanup() -> None:
            subprocess.run(["zfs", "destroy", "-r", dataset], capture_output=True)

    env = make_pod_env(config, images={BUSYBOX: standard_acis[BUSYBOX]}, cleanup=cleanup)
    info = env.ok("info").stdout.splitlines()
    assert f"backend:      {backend}" in info, info

    uuid_file = env.root / "smoke.uuid"
    script = "echo written > /etc/new; cat /etc/new; cat /etc/group | grep -c :"
    result = env.run(
        "--uuid-file-save",
        str(uuid_file),
        *(BUSYBOX, "--exec", "/bin/sh", "--", "-c", script),
    )
    assert result.returncode == 0, result.stderr
    assert app_lines(result.stdout, "busybox") == ["written", "3"]
    uuid = uuid_file.read_text().strip()
    app_dir = env.pods_dir / "data" / uuid / "apps" / "busybox"
    # The app wrote to its own rootfs only, never to the stored tree.
    assert (app_dir / "rootfs" / "etc" / "new").read_text() == "written\n"
    assert list((env.data / "trees").glob("*/rootfs/etc/new")) == []
    mounts = env.mounts()
    pod_mounts = [m for m in mounts if m.startswith(f"{app_dir}/")]
    expected = {
        "overlay": [f"{app_dir}/rootfs"],
        "copy": [],
        "zfs": [f"{app_dir}/.zfs", f"{app_dir}/rootfs"],  # the clone, bound on rootfs
    }
    assert sorted(pod_mounts) == expected[backend]
    if dataset is not None:
        assert len(_zfs_datasets(f"{dataset}/rootfs")) == 2  # the rootfs dataset and a clone

    assert env.ok("rm", uuid).stdout == f"{uuid}\n"
    assert env.pod_entries() == set()
    assert env.mounts() == [m for m in mounts if m not in pod_mounts]
    if dataset is not None:
        assert _zfs_datasets(f"{dataset}/rootfs") == [f"{dataset}/rootfs"]


# -- pod manifests get the checks and implied volumes of reified pods -----------------------------


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        pytest.param(
            ("/data", "/data/x"),
            'app "manual": "/data/x" (volume "logs") is inside "/data" (volume "data"): '
            "nested mount targets are not supported",
            id="nested",
        ),
        pytest.param(
            ("/data", "/data/"),
            'app "manual": volumes "data" and "logs" are both mounted at "/data"',
            id="duplicate",
        ),
        pytest.param(
            ("/srv", "/"),
            """app "manual": volume "logs" cannot be mounted at '/'""",
            id="root",
        ),
    ],
)
def test_pod_manifest_with_bad_mount_targets_fails_in_one_line_and_leaves_nothing(
    pod_env: PodEnv, tmp_path: Path, paths: tuple[str, str], expected: str
) -> None:
    pods_before, mounts_before = pod_env.pod_entries(), pod_env.mounts()
    manifest = _pod_manifest(
        pod_env.image_ids[BUSYBOX],
        mounts=({"volume": "data", "path": paths[0]}, {"volume": "logs", "path": paths[1]}),
    )
    manifest["volumes"] = [{"name": "data", "kind": "empty"}, {"name": "logs", "kind": "empty"}]
    path = tmp_path / "pod.json"
    path.write_text(json.dumps(manifest))
    for command in ("run", "prepare"):
        result = pod_env.jetpack(command, "--pod-manifest", str(path))
        line = assert_fails_in_one_line(result)
        assert line.startswith(f"jetpack: {expected}"), line
        assert result.returncode == 1
    assert pod_env.pod_entries() == pods_before
    assert pod_env.mounts() == mounts_before


def test_pod_manifest_gets_an_implied_volume_for_an_images_mount_point(
    make_pod_env: Callable[..., PodEnv], busybox_aci: Callable[..., Path], tmp_path: Path
) -> None:
    name = "example.com/mount-point"
    script = "grep -c ' /data ' /proc/mounts; touch /data/f && ls /data"
    app = {
        "exec": ["/bin/sh", "-c", script],
        "user": "0",
        "group": "0",
        "mountPoints": [{"name": "data", "path": "/data"}],
    }
    env = make_pod_env(images={name: busybox_aci(name, app)})
    image_id = env.image_ids[name]
    # No app section: the image's app, and its mount point, apply.
    path = tmp_path / "pod.json"
    path.write_text(
        json.dumps(
            {
                "acKind": "PodManifest",
                "acVersion": "0.8.11",
                "apps": [{"name": "manual", "image": {"id": image_id}}],
            }
        )
    )
    uuid = env.ok("prepare", "--pod-manifest", str(path)).stdout.strip()
    manifest = parse_pod_manifest(env.ok("cat-manifest", uuid).stdout.encode())
    assert [(str(v.name), v.kind) for v in manifest.volumes] == [("data", "empty")]
    (only,) = manifest.apps
    assert only.app is None
    assert only.mounts == (Mount(volume=ACName("data"), path="/data"),)
    ran = env.jetpack("run-prepared", uuid)
    assert ran.returncode == 0, ran.stderr
    assert app_lines(ran.stdout, "manual") == ["1", "f"]

    result = env.run("--pod-manifest", str(path))  # run, as prepare
    assert result.returncode == 0, result.stderr
    assert app_lines(result.stdout, "manual") == ["1", "f"]
