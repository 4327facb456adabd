"""The names of the isolators the spec (and the reference code) defines, and the default
capability set: plain constants, so the runtime can use them without loading the
isolator parsers (:mod:`jetpack.schema.isolators`) for apps that have no isolators."""

from __future__ import annotations

from typing import Final

RESOURCE_CPU: Final = "resource/cpu"
RESOURCE_MEMORY: Final = "resource/memory"
RESOURCE_BLOCK_BANDWIDTH: Final = "resource/block-bandwidth"
RESOURCE_BLOCK_IOPS: Final = "resource/block-iops"
RESOURCE_NETWORK_BANDWIDTH: Final = "resource/network-bandwidth"
CAPABILITIES_RETAIN: Final = "os/linux/capabilities-retain-set"
CAPABILITIES_REMOVE: Final = "os/linux/capabilities-remove-set"
NO_NEW_PRIVILEGES: Final = "os/linux/no-new-privileges"
SECCOMP_RETAIN: Final = "os/linux/seccomp-retain-set"
SECCOMP_REMOVE: Final = "os/linux/seccomp-remove-set"
SELINUX_CONTEXT: Final = "os/linux/selinux-context"
UNIX_SYSCTL: Final = "os/unix/sysctl"
# Not in the 0.8.11 spec text, but defined by the reference Go code of the same release.
OOM_SCORE_ADJ: Final = "os/linux/oom-score-adj"
CPU_SHARES: Final = "os/linux/cpu-shares"

#: The 14 capabilities an app keeps when it has no capability isolator.
DEFAULT_CAPABILITIES: Final = (
    "CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER",
    "CAP_KILL", "CAP_MKNOD", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE", "CAP_SETUID",
    "CAP_SETGID", "CAP_SETPCAP", "CAP_SETFCAP", "CAP_SYS_CHROOT",
)  # fmt: skip
