"""Pod planning: the words of ``jetpack run``/``prepare`` in, a reified pod manifest out.

Pure, like ``jetpack.schema``: no files, no network, no store. Planning a pod takes
three steps, and only the middle one does I/O (elsewhere):

1. Parse. The CLI turns pod options with :func:`parse_volume`, :func:`parse_env`,
   :func:`parse_annotation`, :func:`validate_hostname` and :func:`parse_dns`, and the
   words after them (``IMAGE [app options] [--- IMAGE [app options]]...``) with
   :func:`parse_app_arguments` into one :class:`AppOptions` per app.
2. Fetch. The caller resolves each ``AppOptions.image`` to an image ID and its manifest.
3. Reify. :func:`reify` merges the options into each image's app and returns a
   :class:`PodManifest` where every app names its image by ID and every mount point of
   every image has a volume (an implied ``empty`` one when the user gave none, as rkt
   does), so stage1 never has to look at an image manifest to lay out the pod.

A pod manifest the user wrote (``--pod-manifest``) skips steps 1 and 3: once its images
are in the store, :func:`complete` (the last step of :func:`reify`) gives it the implied
volumes and checks its mounts.

Every rejection is a :class:`PodError` whose one-line message names the option or app
at fault and says how to fix it.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from jetpack.errors import ManifestError, PodError
from jetpack.schema._json import quote
from jetpack.schema.app import App
from jetpack.schema.image import ImageManifest
from jetpack.schema.pod import Mount, PodManifest, RuntimeApp, RuntimeImage, Volume, VolumeKind
from jetpack.schema.types import (
    ACName,
    Annotations,
    Environment,
    validate_ac_identifier,
    validate_ac_name,
    validate_env_name,
    validate_image_id,
)

#: Linux' HOST_NAME_MAX: the longest name sethostname(2) accepts.
HOST_NAME_MAX: Final = 64

_VOLUME_KEYS: Final = ("kind", "source", "readOnly", "recursive", "mode", "uid", "gid")
_VOLUME_KINDS: Final[dict[str, VolumeKind]] = {"host": "host", "empty": "empty"}
_MOUNT_KEYS: Final = ("volume", "target")
_HOSTNAME_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_NOT_NAME_CHARS = re.compile(r"[^a-z0-9]+")

GROUP_SEPARATOR: Final = "---"
ARGS_SEPARATOR: Final = "--"
_VALUE_OPTIONS: Final = (
    "--name",
    "--exec",
    "--user",
    "--group",
    "--set-env",
    "--working-dir",
    "--mount",
)
_FLAG_OPTIONS: Final = ("--readonly-rootfs",)
_REPEATABLE: Final = frozenset({"--set-env", "--mount"})
_APP_OPTIONS_HINT: Final = (
    "app options: --name NAME, --exec CMD, --user USER, --group GROUP, "
    "--set-env NAME=VALUE, --working-dir DIR, --mount volume=NAME,target=PATH, "
    "--readonly-rootfs, -- ARGS..."
)


@dataclass(frozen=True, kw_only=True)
class AppOptions:
    """What the command line says about one app of the pod.

    ``None`` (and empty tuples) mean "not given": the image's own value applies.
    ``args=()`` is different from ``args=None``: a bare ``--`` runs the executable with
    no arguments at all.
    """

    image: str  # as the user typed it (name[:version][,k=v], ID, path, URL)
    name: str | None = None
    exec: str | None = None
    args: tuple[str, ...] | None = None
    user: str | None = None
    group: str | None = None
    environment: tuple[tuple[str, str], ...] = ()
    working_dir: str | None = None
    mounts: tuple[tuple[str, str], ...] = ()  # (volume, target)
    readonly_rootfs: bool = False


# --- option strings -------------------------------------------------------------------


def _option_error(option: str, text: str, why: str, hint: str | None = None) -> PodError:
    return PodError(f"invalid {option} {quote(text)}", why, hint)


def _manifest_why(err: ManifestError) -> str:
    return f"{err.path}: {err.rule}" if err.path else err.rule


def _split_params(
    option: str, text: str, parts: Iterable[str], allowed: Sequence[str]
) -> dict[str, str]:
    """``key=value`` words → a dict; keys known and unique."""
    params: dict[str, str] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not part:
            raise _option_error(option, text, "empty parameter", "remove the extra ','")
        if not sep:
            raise _option_error(option, text, f"{quote(part)} is not key=value")
        if key not in allowed:
            near = [k for k in allowed if k.lower() == key.lower()]
            hint = f"did you mean {near[0]}?" if near else "known keys: " + ", ".join(allowed)
            raise _option_error(option, text, f"unknown key {quote(key)}", hint)
        if key in params:
            raise _option_error(option, text, f"{key} given twice")
        params[key] = value
    return params


def _parse_bool(option: str, text: str, key: str, value: str) -> bool:
    if value == "true":
        return True
    if value == "false":
        return False
    raise _option_error(option, text, f"{key}={quote(value)} is not a boolean", "true or false")


def _parse_id(option: str, text: str, key: str, value: str) -> int:
    # Range checks are the Volume's; here only "is it a decimal number".
    if not value.isascii() or not value.isdigit():
        raise _option_error(option, text, f"{key}={quote(value)} is not a decimal number")
    return int(value)


def parse_volume(text: str) -> Volume:
    """``--volume NAME,kind=host|empty[,source=PATH][,readOnly=BOOL][,recursive=BOOL]
    [,mode=0755][,uid=N][,gid=N]`` (rkt's syntax) → a pod :class:`Volume`.

    ``source`` is for host volumes (required, absolute); ``mode``, ``uid`` and ``gid``
    for empty ones. Booleans are ``true`` or ``false``.

    Raises:
        PodError: malformed text, unknown or repeated keys, or a volume the spec forbids.
    """
    option = "--volume"
    name, *rest = text.split(",")
    if not name:
        raise _option_error(option, text, "no volume name", "NAME,kind=host,source=PATH")
    params = _split_params(option, text, rest, _VOLUME_KEYS)
    if "kind" not in params:
        raise _option_error(option, text, "kind is missing", "add kind=host or kind=empty")
    kind = _VOLUME_KINDS.get(params["kind"])
    if kind is None:
        raise _option_error(
            option, text, f"kind={quote(params['kind'])} is not a volume kind", "host or empty"
        )
    if kind == "host" and "source" not in params:
        raise _option_error(option, text, "a host volume needs a source", "add source=PATH")
    try:
        return Volume(
            name=ACName(name),
            kind=kind,
            source=params.get("source"),
            read_only=(
                _parse_bool(option, text, "readOnly", params["readOnly"])
                if "readOnly" in params
                else None
            ),
            recursive=(
                _parse_bool(option, text, "recursive", params["recursive"])
                if "recursive" in params
                else None
            ),
            mode=params.get("mode"),
            uid=_parse_id(option, text, "uid", params["uid"]) if "uid" in params else None,
            gid=_parse_id(option, text, "gid", params["gid"]) if "gid" in params else None,
        )
    except ManifestError as err:
        raise _option_error(option, text, _manifest_why(err), err.hint) from err


def _normalise_target(path: str) -> str:
    """``path`` made absolute (relative to the app's root), with ``.``, ``//``, trailing
    ``/`` removed and ``..`` resolved lexically, never above ``/``."""
    # normpath keeps a leading "//" (POSIX leaves its meaning open); a mount target never wants it.
    return "/" + posixpath.normpath("/" + path).lstrip("/")


def _check_target(path: str, *, relative_ok: bool = False) -> str | None:
    """Why ``path`` cannot be a mount target, or ``None``; a relative ``path`` is one
    only if ``relative_ok`` (it is then taken from the app's root)."""
    if not relative_ok and not posixpath.isabs(path):
        return f"{quote(path)} is not an absolute path"
    if ".." in path.split("/"):
        return f"{quote(path)} contains a '..' component"
    return None


def parse_mount(text: str) -> tuple[str, str]:
    """``--mount volume=NAME,target=PATH`` → ``(NAME, normalised PATH)``.

    Raises:
        PodError: a key missing, unknown or repeated; an invalid volume name; a target
            that is relative or has a ``..`` component.
    """
    option = "--mount"
    params = _split_params(option, text, text.split(","), _MOUNT_KEYS)
    for key in _MOUNT_KEYS:
        if key not in params:
            raise _option_error(
                option, text, f"{key} is missing", "volume=NAME,target=/PATH/IN/APP"
            )
    try:
        volume = validate_ac_name(params["volume"], "volume")
    except ManifestError as err:
        raise _option_error(option, text, _manifest_why(err), err.hint) from err
    why = _check_target(params["target"])
    if why is not None:
        raise _option_error(option, text, f"target {why}", "an absolute path inside the app")
    return str(volume), _normalise_target(params["target"])


def parse_env(text: str) -> tuple[str, str]:
    """``--set-env NAME=VALUE`` → ``(NAME, VALUE)``; the value may contain ``=``."""
    option = "--set-env"
    name, sep, value = text.partition("=")
    if not sep:
        raise _option_error(option, text, "no '='", "NAME=VALUE")
    try:
        validate_env_name(name)
    except ManifestError as err:
        raise _option_error(
            option, text, err.rule, "letters, digits, '_', '.' and '-', not starting with a digit"
        ) from err
    return name, value


def parse_annotation(text: str) -> tuple[str, str]:
    """``--annotation NAME=VALUE`` → ``(NAME, VALUE)``; NAME is an AC Identifier.

    The value rules of well-known names (``created`` is RFC 3339, ``homepage`` and
    ``documentation`` are URLs) are checked here too.
    """
    option = "--annotation"
    name, sep, value = text.partition("=")
    if not sep:
        raise _option_error(option, text, "no '='", "NAME=VALUE")
    try:
        validate_ac_identifier(name)
        Annotations([(name, value)])
    except ManifestError as err:
        raise _option_error(option, text, err.rule, err.hint) from err
    return name, value


def validate_hostname(text: str) -> str:
    """A pod hostname: dot-separated RFC 1123 labels (letters, digits, inner ``-``, at most
    63 characters each), at most :data:`HOST_NAME_MAX` characters in all."""
    option = "--hostname"
    if not text:
        raise _option_error(option, text, "empty hostname")
    if len(text) > HOST_NAME_MAX:
        raise _option_error(
            option, text, f"{len(text)} characters, more than the {HOST_NAME_MAX} Linux allows"
        )
    for label in text.split("."):
        if not _HOSTNAME_LABEL.fullmatch(label):
            raise _option_error(
                option,
                text,
                f"{quote(label)} is not a valid hostname label",
                "1 to 63 letters, digits and '-', not starting or ending with '-', "
                "labels separated by single dots",
            )
    return text


def parse_dns(text: str) -> str:
    """``--dns ADDRESS`` → the IPv4 or IPv6 address in its canonical form."""
    import ipaddress  # 1.5 ms of every pod start otherwise; --dns is rare

    try:
        return str(ipaddress.ip_address(text))
    except ValueError as err:
        raise _option_error(
            "--dns", text, "not an IP address", "an IPv4 or IPv6 address such as 192.0.2.53"
        ) from err


# --- IMAGE [app options] [--- IMAGE [app options]]... ------------------------------------


def _split_groups(argv: Sequence[str]) -> list[list[str]]:
    groups: list[list[str]] = [[]]
    for word in argv:
        if word == GROUP_SEPARATOR:
            groups.append([])
        else:
            groups[-1].append(word)
    return groups


def _is_option(word: str) -> bool:
    return word.startswith("-")


def _option_value(option: str, image: str, words: list[str], i: int, inline: str | None) -> str:
    """The value of a value option (``--opt=V`` or ``--opt V``)."""
    if inline is None:
        # A following option word is almost surely a forgotten value, not the value;
        # a value that starts with "--" can be given as --opt=--value.
        if i + 1 >= len(words) or words[i + 1].startswith("--"):
            raise PodError(
                f"{option} needs a value (image {quote(image)})",
                None,
                f"{option} VALUE or {option}=VALUE",
            )
        inline = words[i + 1]
    if not inline:
        raise PodError(f"{option} needs a non-empty value (image {quote(image)})")
    return inline


def _parse_group(words: list[str], index: int) -> AppOptions:
    if not words:
        raise PodError(
            "empty app group",
            f"'{GROUP_SEPARATOR}' must be followed by an IMAGE"
            if index
            else f"nothing before the first '{GROUP_SEPARATOR}'",
            f"IMAGE [app options] [{GROUP_SEPARATOR} IMAGE [app options]]...",
        )
    image = words[0]
    if _is_option(image):
        if index == 0:
            raise PodError(
                f"option {quote(image)} comes before the first IMAGE",
                "pod options go before the first IMAGE, app options after their IMAGE",
                "IMAGE [app options] [--- IMAGE [app options]]...",
            )
        raise PodError(
            f"option {quote(image)} comes before its IMAGE",
            f"'{GROUP_SEPARATOR}' must be followed by an IMAGE",
            "app options go after their IMAGE",
        )
    values: dict[str, str] = {}
    environment: list[tuple[str, str]] = []
    mounts: list[tuple[str, str]] = []
    readonly_rootfs: bool | None = None
    args: tuple[str, ...] | None = None
    i = 1
    while i < len(words):
        word = words[i]
        if word == ARGS_SEPARATOR:
            args = tuple(words[i + 1 :])
            break
        if not _is_option(word):
            raise PodError(
                f"unexpected word {quote(word)} after image {quote(image)}",
                None,
                f"arguments for the app go after '{ARGS_SEPARATOR}'; "
                f"separate apps with '{GROUP_SEPARATOR}'",
            )
        option, sep, inline_value = word.partition("=")
        inline = inline_value if sep else None
        if option in _FLAG_OPTIONS:
            if readonly_rootfs is not None:
                raise PodError(
                    f"{option} given twice for image {quote(image)}", None, "give it once per app"
                )
            if inline is None or inline == "true":
                readonly_rootfs = True
            elif inline == "false":
                readonly_rootfs = False
            else:
                raise _option_error(option, inline, "not a boolean", "true or false")
            i += 1
            continue
        if option not in _VALUE_OPTIONS:
            raise PodError(f"unknown app option {quote(option)}", None, _APP_OPTIONS_HINT)
        value = _option_value(option, image, words, i, inline)
        i += 1 if inline is not None else 2
        if option == "--set-env":
            environment.append(parse_env(value))
        elif option == "--mount":
            mounts.append(parse_mount(value))
        elif option in values:
            raise PodError(
                f"{option} given twice for image {quote(image)}", None, "give it once per app"
            )
        else:
            values[option] = value
    name = values.get("--name")
    if name is not None:
        try:
            validate_ac_name(name)
        except ManifestError as err:
            raise _option_error("--name", name, err.rule, err.hint) from err
    working_dir = values.get("--working-dir")
    if working_dir is not None and not posixpath.isabs(working_dir):
        raise _option_error(
            "--working-dir", working_dir, "not an absolute path", "a directory such as /srv"
        )
    return AppOptions(
        image=image,
        name=name,
        exec=values.get("--exec"),
        args=args,
        user=values.get("--user"),
        group=values.get("--group"),
        environment=tuple(environment),
        working_dir=working_dir,
        mounts=tuple(mounts),
        readonly_rootfs=bool(readonly_rootfs),
    )


def parse_app_arguments(argv: Sequence[str]) -> tuple[AppOptions, ...]:
    """Parse ``IMAGE [app options] [--- IMAGE [app options]]...``, one group per app.

    Each group starts with its IMAGE, then its options: ``--name``, ``--exec``,
    ``--user``, ``--group``, ``--working-dir`` (once each), ``--set-env NAME=VALUE`` and
    ``--mount volume=NAME,target=PATH`` (repeatable), ``--readonly-rootfs[=true|false]``,
    and ``--`` after which every word up to the next ``---`` is an argument of the app.
    A value option takes ``--opt VALUE`` or ``--opt=VALUE``; a value starting with
    ``--`` needs the second form.

    Raises:
        PodError: no IMAGE, an empty group, an option before its IMAGE, an unknown or
            repeated option, a missing or invalid value, or a stray word.
    """
    if not argv:
        raise PodError("no image given", None, "IMAGE [app options] [--- IMAGE [app options]]...")
    return tuple(_parse_group(words, i) for i, words in enumerate(_split_groups(argv)))


# --- reification -----------------------------------------------------------------------


def default_app_name(image_name: str) -> str:
    """The app name rkt derives from an image name: its last path component, made an AC
    Name (``example.com/tools/hello_world`` → ``hello-world``)."""
    last = image_name.rstrip("/").rsplit("/", 1)[-1]
    return _NOT_NAME_CHARS.sub("-", last.lower()).strip("-")


def _app_name(options: AppOptions, manifest: ImageManifest) -> ACName:
    if options.name is not None:
        try:
            return validate_ac_name(options.name)
        except ManifestError as err:
            raise _option_error("--name", options.name, err.rule, err.hint) from err
    derived = default_app_name(manifest.name)
    try:
        return validate_ac_name(derived)
    except ManifestError as err:
        raise PodError(
            f"cannot name the app of image {quote(str(manifest.name))}",
            err.rule,
            "give --name",
        ) from err


def _check_env_names(pairs: Iterable[tuple[str, str]]) -> None:
    for name, value in pairs:
        try:
            validate_env_name(name)
        except ManifestError as err:
            raise _option_error("--set-env", f"{name}={value}", err.rule) from err


def _merge_env(*layers: Iterable[tuple[str, str]]) -> Environment:
    """Later layers win; a name keeps the position where it first appeared."""
    merged: dict[str, str] = {}
    for layer in layers:
        for name, value in layer:
            merged[name] = value
    return Environment(merged.items())


def _app(
    name: ACName,
    options: AppOptions,
    manifest: ImageManifest,
    environment: Sequence[tuple[str, str]],
) -> App:
    image = quote(str(manifest.name))
    base = manifest.app
    if base is None:
        if options.exec is None:
            raise PodError(f"image {image} has no app to run", None, "give --exec")
        exec_ = (options.exec, *(options.args or ()))
    elif options.exec is not None:
        exec_ = (options.exec, *(options.args or ()))
    elif not base.exec:
        raise PodError(f"the app of image {image} has no exec", None, "give --exec")
    elif options.args is not None:
        exec_ = (base.exec[0], *options.args)
    else:
        exec_ = base.exec
    _check_env_names(options.environment)
    env = _merge_env(
        base.environment.items() if base is not None else (), environment, options.environment
    )
    try:
        if base is None:
            return App(
                exec=exec_,
                user=options.user or "0",
                group=options.group or "0",
                working_directory=options.working_dir,
                environment=env,
            )
        return dataclasses.replace(
            base,
            exec=exec_,
            user=options.user or base.user,
            group=options.group or base.group,
            working_directory=(
                options.working_dir if options.working_dir is not None else base.working_directory
            ),
            environment=env,
        )
    except ManifestError as err:
        raise PodError(
            f"invalid options for app {quote(str(name))}", _manifest_why(err), err.hint
        ) from err


def _check_targets(app: str, mounts: Sequence[Mount]) -> None:
    """No target ``/``, none twice, none inside another (targets normalised)."""
    for i, mount in enumerate(mounts):
        if mount.path == "/":
            raise PodError(
                f"app {quote(app)}: volume {quote(str(mount.volume))} cannot be mounted at '/'",
                None,
                "use --readonly-rootfs or a subdirectory",
            )
        for other in mounts[:i]:
            if other.path == mount.path:
                raise PodError(
                    f"app {quote(app)}: volumes {quote(str(other.volume))} and "
                    f"{quote(str(mount.volume))} are both mounted at {quote(mount.path)}",
                    None,
                    "give each mount its own target",
                )
            outer, inner = sorted((other, mount), key=lambda m: len(m.path))
            if inner.path.startswith(outer.path + "/"):
                raise PodError(
                    f"app {quote(app)}: {quote(inner.path)} (volume "
                    f"{quote(str(inner.volume))}) is inside {quote(outer.path)} "
                    f"(volume {quote(str(outer.volume))})",
                    "nested mount targets are not supported",
                    "mount the volumes at separate paths",
                )


def _check_mount_volume(
    app: str, mount: Mount, pod_volumes: Mapping[str, Volume], hint: str
) -> None:
    """A mount names a volume of the pod, or carries its own ``appVolume``."""
    if mount.app_volume is None and mount.volume not in pod_volumes:
        raise PodError(
            f"app {quote(app)} mounts volume {quote(str(mount.volume))}, "
            "which the pod does not have",
            None,
            hint,
        )


def _option_mounts(
    name: ACName, options: AppOptions, pod_volumes: Mapping[str, Volume]
) -> tuple[Mount, ...]:
    """The app's ``--mount`` options as mounts of pod volumes, targets normalised."""
    mounts: list[Mount] = []
    for volume, target in options.mounts:
        why = _check_target(target)
        if why is not None:
            raise _option_error("--mount", f"volume={volume},target={target}", f"target {why}")
        mount = Mount(volume=ACName(volume), path=_normalise_target(target))
        _check_mount_volume(
            str(name),
            mount,
            pod_volumes,
            f"add --volume {volume},kind=host,source=PATH or kind=empty",
        )
        mounts.append(mount)
    return tuple(mounts)


def _complete_mounts(
    app: RuntimeApp,
    effective: App | None,
    pod_volumes: Mapping[str, Volume],
    implied: dict[str, Volume],
) -> tuple[Mount, ...]:
    """``app``'s mounts checked and normalised, then one for each mount point of
    ``effective`` (its app) no mount covers; adds the empty volumes those imply."""
    name = str(app.name)
    mounts: list[Mount] = []
    for mount in app.mounts:
        _check_mount_volume(
            name, mount, pod_volumes, "add it to the pod's volumes or give the mount an appVolume"
        )
        why = _check_target(mount.path, relative_ok=True)
        if why is not None:
            raise PodError(
                f"app {quote(name)}: cannot mount volume {quote(str(mount.volume))}",
                f"target {why}",
                "an absolute path inside the app",
            )
        path = _normalise_target(mount.path)
        mounts.append(mount if path == mount.path else dataclasses.replace(mount, path=path))
    for point in effective.mount_points if effective is not None else ():
        path = _normalise_target(point.path)
        if any(m.path == path for m in mounts):
            continue
        if point.name not in pod_volumes and point.name not in implied:
            implied[point.name] = Volume(name=point.name, kind="empty")
        mounts.append(Mount(volume=point.name, path=path))
    _check_targets(name, mounts)
    return tuple(mounts)


def complete(manifest: PodManifest, images: Mapping[str, ImageManifest]) -> PodManifest:
    """``manifest`` with a volume for every mount point of every app, its mounts checked.

    Each app's mount points are those of its ``app``, or of its image's when it has none.
    A mount point no mount covers (targets compared normalised; a mount with an
    ``appVolume`` covers its target too) gets a mount of the pod volume of its name, or of
    an implied ``empty`` volume of that name, added once and shared by every app that
    needs it (as rkt does). Mount targets come out normalised (a relative one is taken
    from the app's root).

    Args:
        manifest: a pod manifest, e.g. one the user wrote.
        images: the manifest of each app's image, by image ID.

    Raises:
        PodError: a mount of a volume the pod lacks, a target with a ``..`` component, at
            ``/``, used twice or inside another in one app.
        ValueError: an app with no ``app`` whose image is not in ``images`` (a bug in the
            caller).
    """
    pod_volumes = {str(v.name): v for v in manifest.volumes}
    implied: dict[str, Volume] = {}
    apps: list[RuntimeApp] = []
    for app in manifest.apps:
        effective = app.app
        if effective is None:
            image = images.get(str(app.image.id))
            if image is None:
                raise ValueError(f"no image manifest for app {app.name} ({app.image.id})")
            effective = image.app
        mounts = _complete_mounts(app, effective, pod_volumes, implied)
        apps.append(app if mounts == app.mounts else dataclasses.replace(app, mounts=mounts))
    if not implied and all(new is old for new, old in zip(apps, manifest.apps, strict=True)):
        return manifest
    return dataclasses.replace(
        manifest, apps=tuple(apps), volumes=(*manifest.volumes, *implied.values())
    )


def reify(
    apps: Sequence[AppOptions],
    images: Sequence[tuple[str, ImageManifest]],
    *,
    volumes: Sequence[Volume] = (),
    environment: Sequence[tuple[str, str]] = (),
    annotations: Sequence[tuple[str, str]] = (),
) -> PodManifest:
    """The reified pod manifest for ``apps``, whose images are ``images``.

    Builds the pod the options describe, then completes it with :func:`complete`.

    Args:
        apps: one :class:`AppOptions` per app, in pod order.
        images: ``(image ID, image manifest)`` of ``apps[i]``'s image, same order.
        volumes: the pod's ``--volume`` options; they may go unused.
        environment: pod-wide ``--set-env``, between the image's and the app's own.
        annotations: pod annotations, names unique.

    Raises:
        PodError: a name clash, an image with nothing to run, a mount of a volume the pod
            lacks, a bad mount target, or options that make an invalid manifest.
        ValueError: ``apps`` and ``images`` differ in length (a bug in the caller).
    """
    if len(apps) != len(images):
        raise ValueError(f"{len(apps)} apps but {len(images)} images")
    if not apps:
        raise PodError("a pod needs at least one app", None, "give an IMAGE")
    pod_volumes: dict[str, Volume] = {}
    for volume in volumes:
        if volume.name in pod_volumes:
            raise PodError(
                f"volume {quote(str(volume.name))} given twice", None, "give each volume once"
            )
        pod_volumes[volume.name] = volume
    _check_env_names(environment)
    pod_annotations: dict[str, str] = {}
    for key, value in annotations:
        if key in pod_annotations:
            raise PodError(f"annotation {quote(key)} given twice", None, "give each name once")
        pod_annotations[key] = value
    try:
        checked_annotations = Annotations(pod_annotations.items())
    except ManifestError as err:
        raise PodError("invalid pod annotation", _manifest_why(err), err.hint) from err

    runtime_apps: list[RuntimeApp] = []
    seen: dict[str, str] = {}
    for options, (image_id, manifest) in zip(apps, images, strict=True):
        name = _app_name(options, manifest)
        if name in seen:
            raise PodError(
                f"two apps are named {quote(str(name))} (images {quote(seen[name])} and "
                f"{quote(options.image)})",
                None,
                "give one of them --name",
            )
        seen[name] = options.image
        try:
            checked_id = validate_image_id(image_id)
        except ManifestError as err:
            raise PodError(f"image {quote(options.image)}", err.rule, err.hint) from err
        runtime_apps.append(
            RuntimeApp(
                name=name,
                image=RuntimeImage(id=checked_id, name=manifest.name, labels=manifest.labels),
                app=_app(name, options, manifest, environment),
                read_only_root_fs=options.readonly_rootfs,
                mounts=_option_mounts(name, options, pod_volumes),
            )
        )
    try:
        pod = PodManifest(
            apps=tuple(runtime_apps),
            volumes=tuple(pod_volumes.values()),
            annotations=checked_annotations,
        )
    except ManifestError as err:
        # E.g. two apps declaring the same port name (two copies of one image).
        raise PodError("these apps cannot share a pod", _manifest_why(err), err.hint) from err
    # Every app has its own ``app``: the images are for completeness' sake only.
    return complete(pod, dict(images))
