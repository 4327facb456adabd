"""The service's guards, with the real ``serve()`` in this process (its limits made small):
connection caps per way in, idle connections closed, tokens bound to the way their pod's
requests come, and the service ending when its data directory is deleted.

A pod's PID 1 is played by the test: it accepts a TCP connection itself and sends the
descriptor, with a pod's UUID, to the service's forwarding socket, as stage1 does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from jetpack.metadata import service as service_module
from jetpack.metadata.paths import MetadataPaths, take_lock
from jetpack.metadata.registry import Registry
from tests.metadata import pod_a, pod_b

LIMITS = {"MAX_DIRECT": 4, "MAX_PER_POD": 2, "IDLE_SECONDS": 0.5, "RECONCILE_SECONDS": 0.2}


@dataclass
class Running:
    paths: MetadataPaths
    port: int
    tokens: dict[str, str]  # pod UUID → token
    task: asyncio.Task[None]


@pytest.fixture
async def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Running]:
    """``serve()`` in this process with two registered pods: A on the host's network, B
    with a network of its own."""
    for name, value in LIMITS.items():
        monkeypatch.setattr(service_module, name, value)
    paths = MetadataPaths(tmp_path / "mds")
    paths.ensure()
    registry = Registry(paths)
    tokens = {}
    for spec, net in ((pod_a(), "host"), (pod_b(), "none")):
        (tmp_path / "pods" / "run" / spec.uuid).mkdir(parents=True)  # the pod exists
        registration = spec.registration()
        registration = type(registration).from_json({**registration.to_json(), "net": net})
        registry.save(registration)
        tokens[spec.uuid] = registration.token
    lock = take_lock(paths)
    sock = service_module.bind_tcp(paths, "127.0.0.1:0", pods_registered=False)
    port = sock.getsockname()[1]
    announced = asyncio.Event()
    task = asyncio.create_task(service_module.serve(paths, sock, lambda _a: announced.set()))
    await asyncio.wait_for(announced.wait(), 10)
    try:
        yield Running(paths, port, tokens, task)
    finally:
        if not task.done():
            await _control(paths, {"op": "stop"})
            await asyncio.wait_for(task, 10)
        os.close(lock)


async def _control(paths: MetadataPaths, message: dict[str, object]) -> dict[str, object]:
    reader, writer = await asyncio.open_unix_connection(str(paths.control))
    writer.write(json.dumps(message).encode() + b"\n")
    await writer.drain()
    reply = json.loads(await reader.readline())
    writer.close()
    await writer.wait_closed()
    assert isinstance(reply, dict)
    return reply


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> int:
    """One keep-alive GET on an open connection; its status (0: the connection closed)."""
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        line = await reader.readline()
    except ConnectionResetError:
        return 0
    if not line:
        return 0
    status = int(line.split()[1])
    length = 0
    while (header := await reader.readline()) not in (b"\r\n", b""):
        if header.lower().startswith(b"content-length:"):
            length = int(header.split(b":")[1])
    await reader.readexactly(length)
    return status


async def _direct(running: Running) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", running.port)


async def _handed_over(
    running: Running, uuid: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection as a pod's PID 1 hands it over: accepted here, sent with ``uuid``."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        reader, writer = await asyncio.open_connection(*listener.getsockname())
        accepted, _ = listener.accept()
    with accepted, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        rights = accepted.fileno().to_bytes(4, sys.byteorder)
        sender.sendmsg(
            [uuid.encode()],
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)],
            0,
            str(running.paths.forward),
        )
    return reader, writer


def _path(token: str) -> str:
    return f"/{token}/acMetadata/v1/pod/uuid"


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def test_tokens_work_only_the_way_their_pods_requests_come(running: Running) -> None:
    host_pod, own_net_pod = pod_a().uuid, pod_b().uuid
    host_token, own_token = running.tokens[host_pod], running.tokens[own_net_pod]
    direct = await _direct(running)
    assert await _get(*direct, _path(host_token)) == 200
    assert await _get(*direct, _path(own_token)) == 401  # leaked: worthless on the host
    from_b = await _handed_over(running, own_net_pod)
    assert await _get(*from_b, _path(own_token)) == 200
    assert await _get(*from_b, _path(host_token)) == 401  # B's PID 1 cannot pass A's on
    from_a = await _handed_over(running, host_pod)
    assert await _get(*from_a, _path(host_token)) == 401  # host pods come over TCP only
    for _reader, writer in (direct, from_b, from_a):
        await _close(writer)


async def test_connections_over_the_cap_of_their_way_in_are_closed(running: Running) -> None:
    token = running.tokens[pod_a().uuid]
    direct = [await _direct(running) for _ in range(LIMITS["MAX_DIRECT"])]
    for conn in direct:
        assert await _get(*conn, _path(token)) == 200
    one_too_many = await _direct(running)
    assert await _get(*one_too_many, _path(token)) == 0
    # A pod's connections have their own budget: the port being full does not stop it.
    uuid = pod_b().uuid
    handed = [await _handed_over(running, uuid) for _ in range(int(LIMITS["MAX_PER_POD"]))]
    for conn in handed:
        assert await _get(*conn, _path(running.tokens[uuid])) == 200
    extra = await _handed_over(running, uuid)
    assert await _get(*extra, _path(running.tokens[uuid])) == 0
    # Closing frees the place.
    await _close(direct[0][1])
    await asyncio.sleep(0.1)
    again = await _direct(running)
    assert await _get(*again, _path(token)) == 200
    for _reader, writer in (*direct[1:], one_too_many, *handed, extra, again):
        await _close(writer)


async def test_idle_connections_are_closed(running: Running) -> None:
    silent = await _direct(running)  # never sends a request
    partial = await _direct(running)
    partial[1].write(b"GET /x HTTP/1.1\r\nHost:")  # never finishes its headers
    await partial[1].drain()
    for reader, _writer in (silent, partial):
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the service
    for _reader, writer in (silent, partial):
        await _close(writer)


async def test_handed_over_connections_with_a_bad_origin_are_dropped(running: Running) -> None:
    reader, writer = await _handed_over(running, "not-a-uuid")
    assert await asyncio.wait_for(reader.read(), 5) == b""
    await _close(writer)


async def test_the_service_ends_when_its_data_directory_is_deleted(running: Running) -> None:
    running.paths.lock.unlink()
    await asyncio.wait_for(running.task, 5)
    assert not running.paths.control.exists()


async def test_reconcile_forgets_pods_whose_directory_is_gone(
    running: Running, tmp_path: Path
) -> None:
    (tmp_path / "pods" / "run" / pod_a().uuid).rmdir()
    for _ in range(50):
        if not running.paths.registration(pod_a().uuid).exists():
            break
        await asyncio.sleep(0.05)
    assert not running.paths.registration(pod_a().uuid).exists()
    assert running.paths.registration(pod_b().uuid).exists()
    direct = await _direct(running)
    assert await _get(*direct, _path(running.tokens[pod_a().uuid])) == 401
    await _close(direct[1])
