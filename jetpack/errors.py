"""The exception tree every Jetpack layer raises from.

::

    JetpackError                     exit 1; message "<what>: <why> (<hint>)"
    ├── ManifestError(ValueError)    a manifest or appc value breaks a rule; carries the JSON path
    ├── ACIError(ValueError)         an image archive is unreadable, malformed or hostile
    ├── ConfigError(ValueError)      the configuration file or environment is invalid
    ├── DiscoveryError(ValueError)   an image name or app string is malformed, or discovery failed
    ├── FetchError                   a download failed: unreachable server, HTTP error, refused
    │                                redirect, bad TLS, a mismatching image
    ├── TrustError                   a signature is missing, bad, or made by an untrusted key
    ├── StoreError                   the image store cannot do what was asked (missing image,
    │                                ambiguous prefix, damaged store, busy resource)
    ├── PodError                     a pod cannot be planned, prepared, run, entered or removed
    │                                (bad options, missing volume source, unknown pod UUID)
    ├── MetadataError                the metadata service cannot be reached, started or asked
    └── CommandError(OSError)        an external command failed; carries argv, code, stderr

Each class knows its exit code. The CLI prints ``jetpack: <str(err)>`` on one line and exits
with ``err.exit_code``; library code never prints.
"""

from __future__ import annotations

from collections.abc import Sequence


class JetpackError(Exception):
    """Root of every error Jetpack raises on purpose.

    Args:
        what: what failed, e.g. ``"cannot read image.aci"``.
        why: the reason, e.g. ``"not a tar archive"``.
        hint: what the user can do about it, shown in parentheses.
    """

    exit_code: int = 1

    def __init__(self, what: str, why: str | None = None, hint: str | None = None) -> None:
        self.what = what
        self.why = why
        self.hint = hint
        super().__init__(self._render())

    def _render(self) -> str:
        text = self.what
        if self.why:
            text = f"{text}: {self.why}"
        if self.hint:
            text = f"{text} ({self.hint})"
        return text

    def __str__(self) -> str:
        return self._render()


class ManifestError(JetpackError, ValueError):
    """An appc value or manifest breaks a rule of the spec.

    Args:
        path: the JSON path of the offending value, e.g. ``app.environment[2].name``;
            empty for the document itself.
        rule: what is wrong, e.g. ``"0DEBUG" is not a valid environment variable name``.
    """

    def __init__(self, path: str, rule: str, hint: str | None = None) -> None:
        self.path = path
        self.rule = rule
        super().__init__(path or "manifest", rule, hint)

    def prefixed(self, outer: str) -> ManifestError:
        """The same error with ``outer`` prepended to its JSON path."""
        if not outer:
            return self
        if not self.path:
            path = outer
        elif self.path.startswith("["):
            path = outer + self.path
        else:
            path = f"{outer}.{self.path}"
        err = ManifestError(path, self.rule, self.hint)
        err.__cause__ = self.__cause__
        return err


class ACIError(JetpackError, ValueError):
    """An image archive cannot be read, is not a valid ACI, or is hostile."""


class ConfigError(JetpackError, ValueError):
    """The configuration (file, environment or flags) is invalid."""


class DiscoveryError(JetpackError, ValueError):
    """An app string (``name[:version][,label=value...]``) is malformed, or discovery failed."""


class FetchError(JetpackError):
    """Getting something over the network failed; the message names the URL and the reason."""


class TrustError(JetpackError):
    """An image's signature is missing or invalid, or its signer is not trusted for its name."""


class StoreError(JetpackError):
    """The image store cannot do what was asked: no such image, an ambiguous prefix,
    missing dependencies, a damaged or busy store."""


class PodError(JetpackError):
    """A pod cannot be planned, prepared, run, entered, stopped or removed."""


class MetadataError(JetpackError):
    """The metadata service cannot be started, reached, or do what was asked."""


class CommandError(JetpackError, OSError):
    """An external command exited non-zero or could not be started."""

    def __init__(self, argv: Sequence[str], code: int | None, stderr: str = "") -> None:
        self.argv = list(argv)
        self.code = code
        self.stderr = stderr
        last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        why = f"exit status {code}" if code is not None else "could not be started"
        if last:
            why = f"{why}: {last}"
        super().__init__(f"command {' '.join(self.argv)!r} failed", why)
