"""Which isolators a pod's apps get enforced, as plain values for stage1 (pure).

Enforced: the capability bounding set of every app (the spec's default set, or what an
``os/linux/capabilities-retain-set`` / ``-remove-set`` isolator makes of it) and
``os/linux/no-new-privileges``. Every other isolator is reported as not enforced, as the
spec asks of an ACE that ignores one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from jetpack.errors import PodError
from jetpack.schema.isolator_names import (
    CAPABILITIES_REMOVE,
    CAPABILITIES_RETAIN,
    DEFAULT_CAPABILITIES,
    NO_NEW_PRIVILEGES,
)

if TYPE_CHECKING:
    from jetpack.schema.isolators import Isolator

# linux/capability.h
CAPABILITIES = {
    name: number
    for number, name in enumerate(
        (
            "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
            "CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
            "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
            "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
            "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
            "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
            "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
            "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
            "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
            "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
            "CAP_CHECKPOINT_RESTORE",
        )
    )
}  # fmt: skip


def _numbers(names: Iterable[str], app: str) -> set[int]:
    found = set()
    for name in names:
        # appc spells them CAP_CHOWN; accept chown and CHOWN as rkt did.
        key = name.upper() if name.upper().startswith("CAP_") else f"CAP_{name.upper()}"
        if key not in CAPABILITIES:
            raise PodError(
                f"cannot prepare app {app}",
                f"{name!r} is not a Linux capability",
                "use names such as CAP_NET_ADMIN",
            )
        found.add(CAPABILITIES[key])
    return found


def app_isolation(app: str, isolators: Iterable[Isolator]) -> tuple[dict[str, object], list[str]]:
    """Stage1's isolation fields for one app (``caps``: the bounding set as capability
    numbers; ``no_new_privs``) and the names of the isolators left unenforced."""
    caps = _numbers(DEFAULT_CAPABILITIES, app)
    no_new_privs = False
    ignored: list[str] = []
    for isolator in isolators:
        # Parsing the manifest loaded the isolator module already, if it had any.
        from jetpack.schema.isolators import CapabilitiesSet

        value = isolator.value
        if isolator.name == CAPABILITIES_RETAIN and isinstance(value, CapabilitiesSet):
            caps = _numbers(value.set, app)
        elif isolator.name == CAPABILITIES_REMOVE and isinstance(value, CapabilitiesSet):
            caps -= _numbers(value.set, app)
        elif isolator.name == NO_NEW_PRIVILEGES and isinstance(value, bool):
            no_new_privs = value
        else:
            ignored.append(str(isolator.name))
    return {"caps": sorted(caps), "no_new_privs": no_new_privs}, ignored
