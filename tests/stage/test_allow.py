"""The artifact URI allowlist: component-aware prefixes, forbidden addresses, URI tricks."""

from __future__ import annotations

import posixpath
import socket
from collections.abc import Callable, Sequence
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pointercache.errors import ConfigError, FetchUnavailable, ForbiddenURI
from pointercache.stage.allow import AllowList, check_redirect, forbidden_address
from pointercache.stage.fetchers import AllowAll

PREFIXES = [
    "s3://models",
    "s3://bucket/prefix",
    "https://a.com",
    "https://b.com:8443/repo/",
    "file:///data/models",
    "mlflow-artifacts+http://mlflow.svc:5000",
    "mlflow-artifacts:/1",
]


@pytest.mark.parametrize(
    "uri",
    [
        "s3://models/recommender/8/",
        "s3://models",
        "s3://bucket/prefix",
        "s3://bucket/prefix/x/model.tar.gz",
        "https://a.com/m.tgz",
        "https://a.com:443/m.tgz",
        "https://a.com/m.tgz?X-Amz-Signature=abc",
        "https://b.com:8443/repo/x",
        "file:///data/models/m.pkl",
        "file:///data/models/a%20b/m.pkl",
        "mlflow-artifacts+http://mlflow.svc:5000/artifacts/1/x",
        "mlflow-artifacts:/1/abc/artifacts/model",
    ],
)
def test_allowed_under_prefix(uri: str) -> None:
    """URIs under a prefix, component by component, are allowed."""
    AllowList(PREFIXES, resolve_dns=False).check(uri)


@pytest.mark.parametrize(
    "uri",
    [
        "s3://models-evil/x",
        "s3://modelsx",
        "s3://bucket/prefix2/x",
        "s3://bucket/pre",
        "s3://bucket/other/prefix",
        "https://a.com.evil.net/m.tgz",
        "https://evil-a.com/m.tgz",
        "https://a.com:8443/m.tgz",
        "http://a.com/m.tgz",
        "https://b.com/repo/x",
        "https://b.com:8443/repository/x",
        "file:///data/models2/m.pkl",
        "file:///data/model",
        "file:///data",
        "mlflow-artifacts+http://mlflow.svc:5001/x",
        "mlflow-artifacts+https://mlflow.svc:5000/x",
        "mlflow-artifacts:/12/x",
        "gs://models/x",
    ],
)
def test_refused_outside_prefixes(uri: str) -> None:
    """Look-alike buckets, hosts, ports, schemes and paths are not under any prefix."""
    with pytest.raises(ForbiddenURI, match="not under any --allow prefix"):
        AllowList(PREFIXES, resolve_dns=False).check(uri)


@pytest.mark.parametrize(
    "uri",
    [
        "https://a.com@evil.net/m.tgz",
        "https://user:hunter2@a.com/m.tgz",
        "https://a.com:443@evil.net/",
        "https://evil.net\\@a.com/",
        "https://a.com#@evil.net/",
        "https://a.com/x/../m.tgz",
        "https://a.com/./m.tgz",
        "https://a.com/x/%2e%2e/m.tgz",
        "https://a.com/x/%2E%2E/m.tgz",
        "https://a.com/x/.%2e/m.tgz",
        "https://a.com/x/%252e%252e/m.tgz",
        "https://a.com/x/%25252e%25252e/m.tgz",
        "https://a.com/x/..%2fm.tgz",
        "https://a.com/x%2F..%2Fm.tgz",
        "https://a.com/x%5c..%5cm.tgz",
        "https://a.com/x/m.tgz%00.png",
        "https://a.com//m.tgz",
        "https://a.com/x\\..\\m.tgz",
        "https://a.com/x\n",
        "https://a.com/x\ty",
        "https://caf\u00e9.com/m.tgz",
        "s3://models/a\x00b",
        "https://A.com:/m.tgz",
        "https://a.com:0443/m.tgz",
        "https://a.com:99999/m.tgz",
        "https://a.com./m.tgz",
        "https://a..com/m.tgz",
        "https://a_com%2e/m.tgz",
        "file:///data/models/../secrets",
        "file:///data/models/%2e%2e/secrets",
        "file://localhost/data/models/m.pkl",
        "file:data/models/m.pkl",
        "s3://models/a//b",
        "",
        "no-scheme/at/all",
        "1http://a.com/",
        "http://[127.0.0.1]/m.bin",  # urlsplit raises ValueError: refused, not a crash
        "http://[::1/m.bin",
        "s3://[models]/m.bin",
    ],
)
def test_uri_tricks_refused(uri: str) -> None:
    """User info, fragments, traversal in any encoding and non-normalised URIs are refused."""
    with pytest.raises(ForbiddenURI) as info:
        AllowList(PREFIXES, resolve_dns=False).check(uri)
    assert "hunter2" not in str(info.value)


FORBIDDEN = [
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.170.2/v2/credentials",
    "http://[fd00:ec2::254]/latest/",
    "http://100.100.100.200/latest/meta-data/",
    "http://168.63.129.16/machine",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.GOOGLE.INTERNAL/computeMetadata/v1/",
    "http://metadata/computeMetadata/v1/",
    "http://metadata.goog/",
    "http://instance-data/latest/",
    "http://2852039166/",
    "http://0xa9fea9fe/",
    "http://0251.0376.0251.0376/",
    "http://0xa9.0xfe.0xa9.0xfe/",
    "http://169.254.43518/",
    "http://169.16689662/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[0:0:0:0:0:ffff:a9fe:a9fe]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[::a9fe:a9fe]/",
    "http://[2002:a9fe:a9fe::1]/",
    "http://127.0.0.1/",
    "http://127.0.0.1:8787/refresh",
    "http://127.1/",
    "http://017700000001/",
    "http://0/",
    "http://0.0.0.0/",
    "http://0.1.2.3/",
    "http://[::1]/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    "http://localhost/",
    "http://LocalHost:5000/",
    "http://models.localhost/",
    "http://224.0.0.1/",
    "http://[ff02::1]/",
    "http://255.255.255.255/",
    "https://169.254.169.254/",
    "mlflow-artifacts+http://169.254.169.254:80/x",
    "mlflow-artifacts://127.0.0.1:5000/x",
    "custom-scheme://[::1]:9/x",
]


@pytest.mark.parametrize("uri", FORBIDDEN)
def test_forbidden_addresses_refused_with_empty_allowlist(uri: str) -> None:
    """Loopback, link-local, metadata and similar targets are refused in every spelling."""
    with pytest.raises(ForbiddenURI):
        AllowList([], resolve_dns=False).check(uri)


@pytest.mark.parametrize(
    "uri",
    [
        "http://10.0.0.5:9000/models/m.tgz",
        "http://192.168.1.10/m.tgz",
        "https://[2001:db8::1]/m.tgz",
        "https://models.example.com/m.tgz",
        "https://8.8.8.8/m.tgz",
        "s3://metadata/model/",
        "s3://localhost/x",
        "file:///var/models/m.pkl",
        "runs:/0123abcd/model",
        "models:/fraud/3",
        "mlflow-artifacts:/1/x/artifacts",
    ],
)
def test_empty_allowlist_allows_ordinary_targets(uri: str) -> None:
    """With no prefixes, private-network hosts and storage schemes are allowed."""
    AllowList([], resolve_dns=False).check(uri)


def test_explicitly_named_loopback_is_allowed() -> None:
    """A prefix naming a loopback address or localhost allows exactly that host and port."""
    allow = AllowList(["http://127.0.0.1:8080", "http://localhost:5000/mlflow"])
    allow.check("http://127.0.0.1:8080/m.tgz")
    allow.check("http://localhost:5000/mlflow/artifacts/x")
    for uri in (
        "http://127.0.0.1:8081/m.tgz",
        "http://localhost:8080/m.tgz",
        "http://127.0.0.2:8080/m.tgz",
        "http://localhost:5000/other",
    ):
        with pytest.raises(ForbiddenURI):
            allow.check(uri)


@pytest.mark.parametrize(
    ("prefix", "uri"),
    [
        ("s3://models/credit models/", "s3://models/credit models/v 1/model.pkl"),
        ("https://a.com/models/", "https://a.com/models/credit model.tgz"),
        ("https://a.com/models/", "https://a.com/models/credit%20model.tgz"),
        ("https://a.com/mod\u00e8les/", "https://a.com/mod%C3%A8les/m.tgz"),
        ("file:///data/models/", "file:///data/models/credit model/1"),
    ],
)
def test_names_servers_accept_are_allowed(prefix: str, uri: str) -> None:
    """Spaces and non-ASCII in S3 keys and URL paths pass, written raw or percent-encoded."""
    AllowList([prefix], resolve_dns=False).check(uri)


def test_an_s3_key_is_literal() -> None:
    """In s3:// a '%' is part of the key: s3://b/a%20b is not the key 'a b'."""
    allow = AllowList(["s3://models/a b/"], resolve_dns=False)
    allow.check("s3://models/a b/m.pkl")
    with pytest.raises(ForbiddenURI, match="not under any --allow prefix"):
        allow.check("s3://models/a%20b/m.pkl")


@pytest.mark.parametrize(
    ("uri", "hint"),
    [
        (
            "mlflow-artifacts+http://127.0.0.1:5000/0/r/artifacts/model",
            "add --allow mlflow-artifacts+http://127.0.0.1:5000/",
        ),
        ("http://localhost:5000/models/m.tgz", "add --allow http://localhost:5000/"),
        ("http://[::1]:8080/m.tgz", "add --allow http://[::1]:8080/"),
        ("http://rebind.example.com/m.tgz", "use the address itself in the registry URI"),
    ],
)
def test_a_refused_loopback_origin_says_how_to_allow_it(uri: str, hint: str) -> None:
    """Refusing a loopback MLflow's artifacts names the --allow prefix that would admit them."""
    allow = AllowList([], resolver=resolver({"rebind.example.com": ["127.0.0.1"]}))
    with pytest.raises(ForbiddenURI) as info:
        allow.check(uri)
    assert hint in str(info.value)
    if "add --allow" in hint:  # and the suggested prefix does admit it
        AllowList([hint.rsplit(" ", 1)[-1]]).check(uri)


def test_no_hint_for_a_metadata_address() -> None:
    """The metadata address is refused without a suggestion to allow it."""
    with pytest.raises(ForbiddenURI) as info:
        AllowList([]).check("http://169.254.169.254/latest/meta-data/")
    assert "--allow" not in str(info.value)


def test_explicitly_named_metadata_address_is_allowed() -> None:
    """Naming the metadata address itself in a prefix is an explicit opt-in for that host."""
    AllowList(["http://169.254.169.254/latest"]).check("http://169.254.169.254/latest/x")


def resolver(table: dict[str, list[str]]) -> Callable[[str, int | None], Sequence[str]]:
    """A fixed DNS answer table (the allowlist's own injection point)."""

    def resolve(host: str, port: int | None) -> Sequence[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    return resolve


DNS = {
    "models.example.com": ["203.0.113.7", "2001:db8::7"],
    "rebind.example.com": ["203.0.113.8", "127.0.0.1"],
    "meta.example.com": ["169.254.169.254"],
    "mapped.example.com": ["::ffff:169.254.169.254"],
    "minio.svc": ["10.96.0.12"],
}


@pytest.mark.parametrize(
    ("uri", "ok"),
    [
        ("https://models.example.com/m.tgz", True),
        ("http://minio.svc:9000/models/m.tgz", True),
        ("https://rebind.example.com/m.tgz", False),
        ("https://meta.example.com/m.tgz", False),
        ("https://mapped.example.com/m.tgz", False),
    ],
)
def test_resolved_addresses_are_checked(uri: str, ok: bool) -> None:
    """Every address a name resolves to must be allowed, not just the first."""
    allow = AllowList([], resolver=resolver(DNS))
    if ok:
        allow.check(uri)
    else:
        with pytest.raises(ForbiddenURI, match="address"):
            allow.check(uri)


def test_allowlisted_name_resolving_to_metadata_is_still_refused() -> None:
    """A DNS name in a prefix does not exempt the addresses it resolves to (rebinding)."""
    allow = AllowList(["https://meta.example.com"], resolver=resolver(DNS))
    with pytest.raises(ForbiddenURI, match="metadata"):
        allow.check("https://meta.example.com/m.tgz")


def test_unresolvable_host_is_transient() -> None:
    """A name that does not resolve is a transient fetch failure, not a forbidden URI."""
    with pytest.raises(FetchUnavailable):
        AllowList([], resolver=resolver(DNS)).check("https://nowhere.example.com/m.tgz")


def test_real_resolver_refuses_a_name_for_loopback() -> None:
    """With the real resolver, a name this machine maps to loopback is refused."""
    host = socket.gethostname().lower()
    addresses = {i[4][0] for i in socket.getaddrinfo(host, None)}
    if not any(forbidden_address(str(a).split("%")[0]) for a in addresses):
        pytest.skip(f"{host} does not resolve to a loopback address here")
    with pytest.raises(ForbiddenURI, match="loopback"):
        AllowList([]).check(f"http://{host}:8080/m.tgz")


def test_storage_schemes_never_resolve() -> None:
    """s3:// and file:// URIs are checked without any DNS lookup."""

    def no_dns(host: str, port: int | None) -> Sequence[str]:
        raise AssertionError("DNS must not be used")

    allow = AllowList(["s3://models", "file:///data"], resolver=no_dns)
    allow.check("s3://models/x")
    allow.check("file:///data/x")


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/m2.tgz", "https://a.com/m2.tgz"),
        ("m2.tgz", "https://a.com/dir/m2.tgz"),
        ("https://a.com/other/m.tgz", "https://a.com/other/m.tgz"),
    ],
)
def test_redirect_hop_allowed(location: str, expected: str) -> None:
    """A redirect inside the allowlist returns the absolute next URI."""
    allow = AllowList(["https://a.com"], resolve_dns=False)
    assert allow.check_redirect("https://a.com/dir/m.tgz", location) == expected


@pytest.mark.parametrize(
    "location",
    [
        "http://a.com/m.tgz",
        "https://evil.net/m.tgz",
        "http://169.254.169.254/latest/meta-data/",
        "https://a.com/dir/../../m.tgz",
        "//evil.net/m.tgz",
    ],
)
def test_redirect_hop_refused(location: str) -> None:
    """Redirects are checked like first requests, and https→http downgrades are refused."""
    allow = AllowList(["https://a.com"], resolve_dns=False)
    with pytest.raises(ForbiddenURI):
        allow.check_redirect("https://a.com/dir/m.tgz", location)


def test_redirect_helper_works_with_any_policy() -> None:
    """check_redirect applies the downgrade rule even for the allow-all policy."""
    assert check_redirect(AllowAll(), "http://a.com/x", "/y") == "http://a.com/y"
    with pytest.raises(ForbiddenURI):
        check_redirect(AllowAll(), "https://a.com/x", "http://a.com/y")


@pytest.mark.parametrize(
    "prefix",
    ["https://user@a.com", "s3://b/../x", "https://a.com?x=1", "a.com", "file:///a//b"],
)
def test_bad_prefixes_are_config_errors(prefix: str) -> None:
    """A malformed --allow prefix is a configuration error naming the flag."""
    with pytest.raises(ConfigError, match="--allow"):
        AllowList([prefix])


@pytest.mark.parametrize(
    ("addr", "reason"),
    [
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("127.0.0.1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("239.1.1.1", "multicast"),
        ("10.0.0.1", None),
        ("100.64.0.1", None),
        ("2001:db8::1", None),
        ("64:ff9b::808:808", None),
    ],
)
def test_forbidden_address_table(addr: str, reason: str | None) -> None:
    """forbidden_address names the class of a forbidden address and passes ordinary ones."""
    got = forbidden_address(addr)
    if reason is None:
        assert got is None
    else:
        assert got is not None
        assert reason in got


@given(
    st.lists(
        st.sampled_from(
            ["models", "m.tgz", ".", "..", "%2e", "%2E%2e", "%252e", "%2f", "", "a%20b"]
        ),
        max_size=6,
    )
)
def test_accepted_file_uris_stay_under_the_prefix(segments: list[str]) -> None:
    """Any file URI the allowlist accepts under /data/models resolves inside /data/models."""
    uri = "file:///data/models/" + "/".join(segments)
    try:
        AllowList(["file:///data/models"]).check(uri)
    except ForbiddenURI:
        return
    path = posixpath.normpath(unquote(unquote(urlsplit(uri).path)))
    assert path == "/data/models" or path.startswith("/data/models/")


@pytest.mark.parametrize(
    "uri",
    ["https://a.com@evil.net/m.tgz", "https://user:hunter2@a.com/m.tgz", "s3://key@models/x"],
)
def test_userinfo_refused_by_name(uri: str) -> None:
    """Any user info is refused as such (and never echoed), whatever else the URI says."""
    with pytest.raises(ForbiddenURI, match="user info") as info:
        AllowList([], resolve_dns=False).check(uri)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("uri", ["http://[127.0.0.1]/m.bin", "https://[::1/m.bin"])
def test_unparseable_uris_are_forbidden_wherever_they_are_split(uri: str) -> None:
    """The fetcher table and the AllowAll policy refuse an unparseable URI as ForbiddenURI."""
    from pointercache.stage.fetchers import FetchOptions, open_fetcher

    with pytest.raises(ForbiddenURI, match="not a parseable URI"):
        open_fetcher(uri, FetchOptions())
    with pytest.raises(ForbiddenURI):
        check_redirect(AllowList([], resolve_dns=False), "https://a.com/x", uri)
