"""Settings, parsed once at the edge: flags first, ``POINTERCACHE_*`` environment second.

Every field of ``Settings`` carries its flag, roles and help in its metadata, so the argument
parser, the environment names, ``--help`` and the README table come from one place. Values are
parsed into their types here, once (a selector into a ``Selector``, the listen address into a
``ListenAddress``, choices into ``Literal`` values); a bad one is a ``ConfigError`` naming the
flag. Nothing outside the CLI reads ``os.environ``, and nothing below the composition root
(``pointercache.sync.wiring`` and the entrypoints) reads ``Settings``: they get option groups.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from pointercache.errors import ConfigError, InvalidPointer
from pointercache.model.candidate import Selector
from pointercache.model.loaded import ReadyWhen, UrlTemplate, parse_hooks, parse_probe
from pointercache.model.pointer import check_model_name
from pointercache.model.signature import Mode, Unsigned

ENV_PREFIX = "POINTERCACHE_"
INIT, SIDECAR = "init", "sidecar"
BOTH = (INIT, SIDECAR)


LogLevel = Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """Where the sidecar's status server listens: ``host:port`` (IPv6 hosts in brackets)."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        """Parse ``host:port``; ``ConfigError`` unless the port is 0-65535."""
        host, sep, port = text.rpartition(":")
        try:
            number = int(port)
        except ValueError:
            number = -1
        if not sep or not 0 <= number <= 65535:  # noqa: PLR2004
            raise ConfigError(f"--listen {text!r}: expected host:port")
        return cls(host.strip("[]") or "0.0.0.0", number)  # noqa: S104

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _opt(default: Any, help_: str, roles: tuple[str, ...] = BOTH, **kw: Any) -> Any:
    meta = {"help": help_, "roles": roles, **kw}
    if isinstance(default, list | tuple):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the init container and the sidecar need, validated."""

    model: str = _opt("", "registered model name to serve (required)", metavar="NAME")
    selector: Selector = _opt(
        Selector("alias", "production"),
        "which version: alias:NAME, version:N or stage:NAME",
        parse=Selector.parse,
    )
    registry: tuple[str, ...] = _opt(
        [],
        "registry URI, repeatable, tried in order (file://, http(s)://, s3://, "
        "mlflow+http(s)://, configmap://)",
        repeat=True,
        metavar="URI",
    )
    registry_timeout: float = _opt(0.5, "seconds each registry may take per resolution")
    registry_token_file: Path | None = _opt(None, "file with a bearer token for the registry")
    registry_basic_auth_file: Path | None = _opt(None, "file with user:password for the registry")
    root: Path = _opt(Path("/pointercache"), "shared volume holding current, model, pointer.json")
    lkg_dir: Path | None = _opt(
        None,
        "node-local directory for the last-known-good pointer "
        "and the content-addressed artifact cache",
    )
    lkg_cluster_dir: Path | None = _opt(
        None, "mounted ConfigMap directory with the cluster LKG", roles=(INIT,)
    )
    lkg_configmap: str | None = _opt(
        None, "namespace/name of the cluster LKG ConfigMap to keep current", roles=(SIDECAR,)
    )
    pinned_version: str | None = _opt(None, "version served when no registry and no LKG answer")
    pinned_uri: str | None = _opt(None, "artifact URI of the pinned version")
    pinned_digest: str | None = _opt(None, "sha256:<hex> digest of the pinned artifact")
    expect_signature: Path | None = _opt(None, "JSON file: the inputs the serving code produces")
    signature_mode: Mode = _opt(
        "strict", "signature gate: strict or subset", choices=get_args(Mode)
    )
    unsigned_model: Unsigned = _opt(
        "allow",
        "what the signature gate does with a model that has no readable signature: "
        "allow (with a logged reason) or refuse",
        choices=get_args(Unsigned),
    )
    allow: tuple[str, ...] = _opt(
        [],
        "artifact URI prefix that may be fetched, repeatable; once given, every artifact "
        "(file:// and the pinned one included) must match one (default: all but loopback, "
        "link-local and metadata addresses, and file:// only from a file:// registry or pinned)",
        repeat=True,
        metavar="PREFIX",
    )
    max_artifact_bytes: int = _opt(64 << 30, "refuse artifacts larger than this many bytes")
    cache_max_bytes: int = _opt(0, "bound of the node artifact cache in bytes (0: unbounded)")
    keep_versions: int = _opt(2, "staged versions kept on the shared volume (current included)")
    deadline: float = _opt(
        120.0,
        "total seconds the init container may take; it exits by then whatever blocks. While a "
        "later step (node LKG, cluster LKG, pinned) has an answer, a step may use at most half "
        "of the time left, so a stalled registry or download cannot starve the fallbacks",
        roles=(INIT,),
    )
    termination_log: Path = _opt(
        Path("/dev/termination-log"), "file for the one-line failure reason", roles=(INIT,)
    )
    poll_interval: float = _opt(15.0, "seconds between registry polls", roles=(SIDECAR,))
    poll_jitter: float = _opt(0.2, "random extra fraction of the poll interval", roles=(SIDECAR,))
    stale_grace: float = _opt(
        600.0,
        "seconds a registry must keep answering below the revision it claimed for the served "
        "version before that answer is accepted (0: at once)",
        roles=(SIDECAR,),
    )
    prefetch_selector: Selector | None = _opt(
        None,
        "also prestage this selector without serving it",
        roles=(SIDECAR,),
        parse=Selector.parse,
    )
    listen: ListenAddress = _opt(
        ListenAddress("0.0.0.0", 8787),  # noqa: S104 - the pod's address; the chart sets it
        "host:port of the status server",
        roles=(SIDECAR,),
        parse=ListenAddress.parse,
    )
    admin_token_file: Path | None = _opt(
        None,
        "file with the bearer token for POST /refresh and, from outside the pod, POST /loaded "
        "(without it, both answer on loopback only)",
        roles=(SIDECAR,),
    )
    pod_name: str | None = _opt(
        None, "this pod's name (Downward API), for annotations and Events", roles=(SIDECAR,)
    )
    pod_namespace: str | None = _opt(
        None, "this pod's namespace (Downward API), for annotations and Events", roles=(SIDECAR,)
    )
    report_to_pod: bool = _opt(
        False,
        "annotate this pod (pointercache.dev/*) and emit Events on flips and fallbacks "
        "(needs --pod-name, --pod-namespace and the chart's RBAC)",
        roles=(SIDECAR,),
    )
    on_flip_url: tuple[UrlTemplate, ...] = _opt(
        [],
        "URL POSTed after each flip to make the model server reload, repeatable; "
        "{model}, {version}, {digest} and {path} are replaced; a 2xx answer means loaded",
        roles=(SIDECAR,),
        repeat=True,
        parse=parse_hooks,
        metavar="URL",
    )
    loaded_probe_url: UrlTemplate | None = _opt(
        None,
        "URL polled (GET) after each flip until it answers 2xx, then the version counts as "
        "loaded; same placeholders as --on-flip-url",
        roles=(SIDECAR,),
        parse=parse_probe,
        metavar="URL",
    )
    on_flip_timeout: float = _opt(
        120.0,
        "seconds a reload may take after a flip (hooks with retries, probe, or the model "
        "container's acknowledgement) before it counts as failed",
        roles=(SIDECAR,),
    )
    ready_when: ReadyWhen = _opt(
        "published",
        "when /readyz answers 200: published (a verified model is on the volume) or loaded "
        "(the model container has loaded one)",
        roles=(SIDECAR,),
        choices=get_args(ReadyWhen),
    )
    log_level: LogLevel = _opt("info", "debug, info, warning or error", choices=get_args(LogLevel))

    def _validate_kubernetes(self) -> None:
        if self.report_to_pod and not (self.pod_name and self.pod_namespace):
            raise ConfigError("--report-to-pod needs --pod-name and --pod-namespace")
        if self.lkg_configmap is not None and self.lkg_configmap.count("/") != 1:
            raise ConfigError(f"--lkg-configmap {self.lkg_configmap!r}: expected namespace/name")

    def validate(self) -> Settings:
        """Check cross-field rules; raise ``ConfigError`` with the flag's name."""
        if not self.model:
            raise ConfigError("--model is required")
        try:
            check_model_name("--model", self.model)
        except InvalidPointer as exc:
            raise ConfigError(str(exc)) from None
        if self.unsigned_model == "refuse" and self.expect_signature is None:
            raise ConfigError(
                "--unsigned-model refuse needs --expect-signature (without it there is no gate)"
            )
        pinned = (self.pinned_version, self.pinned_uri, self.pinned_digest)
        if any(pinned) and not (self.pinned_version and self.pinned_uri):
            raise ConfigError("--pinned-version and --pinned-uri go together")
        for name in ("registry_timeout", "deadline", "poll_interval", "on_flip_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")
        self._validate_kubernetes()
        if self.keep_versions < 1:
            raise ConfigError("--keep-versions must be at least 1")
        if not 0 <= self.poll_jitter <= 1:
            raise ConfigError("--poll-jitter must be between 0 and 1")
        if self.stale_grace < 0:
            raise ConfigError("--stale-grace must not be negative")
        return self


def env_name(name: str) -> str:
    """``registry_timeout`` → ``POINTERCACHE_REGISTRY_TIMEOUT``."""
    return ENV_PREFIX + name.upper()


def _type_of(f: dataclasses.Field[Any]) -> Any:
    if "parse" in f.metadata:
        return str  # parsed (with a ConfigError naming the flag) in ``from_namespace``
    text = str(f.type)
    if text == "bool":
        return _bool
    if "float" in text:
        return float
    if "int" in text and "str" not in text:
        return int
    if "Path" in text:
        return Path
    return str


def _metavar(name: str, kind: Any) -> str:
    """What a value looks like, for --help: SECONDS, BYTES, PATH..."""
    if name.endswith("_bytes"):
        return "BYTES"
    special = {
        "poll_jitter": "FRACTION",
        "keep_versions": "N",
        "listen": "HOST:PORT",
        "selector": "KIND:VALUE",
        "prefetch_selector": "KIND:VALUE",
        "pinned_digest": "sha256:HEX",
        "lkg_configmap": "NAMESPACE/NAME",
        "pinned_uri": "URI",
        "pinned_version": "VERSION",
    }
    if name in special:
        return special[name]
    if kind is float:
        return "SECONDS"
    if kind is Path:
        return "FILE" if name.endswith(("_file", "signature", "_log")) else "DIR"
    return "TEXT"


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def add_arguments(parser: argparse.ArgumentParser, role: str) -> None:
    """Add one flag per ``Settings`` field used by ``role`` (with its env name in the help)."""
    for f in dataclasses.fields(Settings):
        meta = f.metadata
        if role not in meta["roles"]:
            continue
        default = f.default if f.default is not dataclasses.MISSING else ()
        shown = "" if default in (None, "", ()) else f" (default: {default})"
        kwargs: dict[str, Any] = {
            "dest": f.name,
            "type": _type_of(f),
            "default": None,
            "help": f"{meta['help']}{shown} [env {env_name(f.name)}]",
        }
        for key in ("choices", "metavar"):
            if key in meta:
                kwargs[key] = meta[key]
        if "metavar" not in kwargs and "choices" not in kwargs:
            kwargs["metavar"] = _metavar(f.name, kwargs["type"])
        if meta.get("repeat"):
            kwargs["action"] = "append"
        if kwargs["type"] is _bool:
            del kwargs["type"]
            kwargs["action"] = argparse.BooleanOptionalAction
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def from_namespace(ns: argparse.Namespace, role: str, environ: Mapping[str, str]) -> Settings:
    """Merge flags (first) and environment (second) into validated ``Settings``."""
    known = {env_name(f.name) for f in dataclasses.fields(Settings)}
    unknown = sorted(k for k in environ if k.startswith(ENV_PREFIX) and k not in known)
    if unknown:
        raise ConfigError(f"unknown environment variable {unknown[0]} (misspelled setting?)")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        if role not in f.metadata["roles"]:
            continue
        value = getattr(ns, f.name, None)
        if value is None and env_name(f.name) in environ:
            value = _from_env(f, environ[env_name(f.name)])
        if value is not None and "parse" in f.metadata:
            value = f.metadata["parse"](value)
        if value is not None:
            values[f.name] = tuple(value) if f.metadata.get("repeat") else value
    return Settings(**values).validate()


def _from_env(f: dataclasses.Field[Any], raw: str) -> Any:
    if f.metadata.get("repeat"):
        return [item for item in raw.replace(",", " ").split() if item]
    if raw == "" and "None" in str(f.type):
        return None
    try:
        value = _type_of(f)(raw)
    except ValueError as exc:
        raise ConfigError(f"{env_name(f.name)}={raw!r}: {exc}") from exc
    choices: Sequence[str] | None = f.metadata.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{env_name(f.name)}={raw!r}: expected one of {', '.join(choices)}")
    return value
