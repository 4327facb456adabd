"""Pod garbage collection (``jetpack gc``), as rkt does it, in two steps.

Mark: a pod that exited (in ``run``, nobody holds its lock) moves to ``exited-garbage``
and a ``gc-marked`` file records when; a pod abandoned while being prepared (in
``embryo`` or ``prepare``, unlocked), or prepared and never run for longer than
``expire_prepared_seconds``, moves to ``garbage``.
Sweep: ``garbage`` pods go at once, ``exited-garbage`` ones once marked for longer than
``grace_seconds`` (time to read their logs and exit status), each under its lock; then
data directories a crash left without a pod.

The work is proportional to the pods found in each state directory; only pods that change
are read beyond a lock probe.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from jetpack.errors import JetpackError
from jetpack.runtime.pods import Pod, Pods, PodState, remove_dir
from jetpack.runtime.stage0 import discard
from jetpack.store.store import Store

MARK_FILE = "gc-marked"
ORPHAN_MIN_AGE = 60.0


@dataclass
class GCReport:
    marked: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _age(pod: Pod, now: float) -> float:
    runtime = pod.read("runtime.json") or {}
    created = runtime.get("created")
    if not created:
        return now - pod.path.stat().st_mtime
    stamp = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return now - stamp.timestamp()


def _marked_at(pod: Pod) -> float:
    try:
        return float((pod.path / MARK_FILE).read_text())
    except (OSError, ValueError):
        return 0.0


def collect(
    store: Store,
    pods: Pods,
    *,
    grace_seconds: float,
    expire_prepared_seconds: float,
    mark_only: bool = False,
    now: float | None = None,
) -> GCReport:
    """Mark and (unless ``mark_only``) sweep; see the module docstring."""
    now = time.time() if now is None else now
    report = GCReport()
    for pod in list(pods.all()):
        try:
            _mark(pod, now, expire_prepared_seconds, report)
        except (JetpackError, OSError) as err:
            report.failed.append(f"cannot collect pod {pod.uuid}: {err}")
    if mark_only:
        return report
    for pod in list(pods.all()):
        if pod.state == PodState.GARBAGE or (
            pod.state == PodState.EXITED_GARBAGE and now - _marked_at(pod) >= grace_seconds
        ):
            try:
                if not pod.lock():
                    continue  # another gc or rm is removing it
                discard(store, pod)
                report.removed.append(pod.uuid)
            except (JetpackError, OSError) as err:
                pod.unlock()
                report.failed.append(f"cannot remove pod {pod.uuid}: {err}")
    for hidden in pods.hidden_embryos():
        # A pod is made as embryo/.<uuid> and renamed once locked: one a crash left.
        pod = Pod(pods.root, hidden.name, PodState.EMBRYO)
        if now - hidden.stat().st_mtime >= ORPHAN_MIN_AGE and not pod.locked_by_other():
            try:
                remove_dir(hidden)
                report.removed.append(hidden.name.lstrip("."))
            except JetpackError as err:
                report.failed.append(str(err))
    for orphan in pods.orphan_data():
        # A pod being created makes its directory before its data directory; one that
        # appeared after the listing above is young: leave it to the next gc.
        if now - orphan.stat().st_mtime < ORPHAN_MIN_AGE:
            continue
        try:
            discard(store, Pod(pods.root, orphan.name, PodState.GARBAGE))
            report.removed.append(orphan.name)
        except (JetpackError, OSError) as err:
            report.failed.append(f"cannot remove {orphan}: {err}")
    return report


def _mark(pod: Pod, now: float, expire_prepared: float, report: GCReport) -> None:
    if pod.state in (PodState.EXITED_GARBAGE, PodState.GARBAGE):
        return
    if pod.state == PodState.PREPARED and _age(pod, now) < expire_prepared:
        return
    if not pod.lock():
        return  # running, being prepared, or being started
    try:
        if pod.state == PodState.RUN:
            (pod.path / MARK_FILE).write_text(f"{now}\n")
            pod.move(PodState.EXITED_GARBAGE)
        else:
            pod.move(PodState.GARBAGE)
        report.marked.append(pod.uuid)
    finally:
        pod.unlock()
