"""Egress policy: which URLs the service may call (LLM providers, evaluation endpoints).

A provider URL is chosen by a project lead, so without a policy it reaches whatever the API and
the workers can reach: PostgreSQL, Redis, the API itself, the cloud metadata service. The rules:

* scheme ``http`` or ``https`` only;
* every address the host name resolves to must be a public (globally routable) address:
  loopback, link-local (which holds the metadata service, 169.254.169.254), private, shared,
  reserved, multicast and unspecified ranges are refused, also in IPv4-mapped IPv6 form and in
  the legacy numeric spellings (``0x7f000001``, ``2130706433``) that the resolver accepts;
* unless the admin allow-list ``ANNOTUNE_EGRESS_ALLOW`` admits the address: a local vLLM or
  llama.cpp server is a common and legitimate target. Entries are an address or network
  (``10.0.0.0/8``, ``::1``: any port), ``host:port`` / ``[v6]:port`` (that port only) or a host
  name (``vllm``: whatever it resolves to, any port; ``vllm:8000``: that port).

:func:`check_url` applies the policy to a URL (save time, and before a test call).
:func:`guarded_http_client` returns an ``httpx.Client`` whose every TCP connection is checked
at connect time against the address it actually connects to, so redirects and DNS answers that
change between the check and the request (rebinding) are checked too; environment proxies are
not used.
"""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from service.core.errors import Invalid

SETTING = "ANNOTUNE_EGRESS_ALLOW"
ALLOWED_SCHEMES = ("http", "https")
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class EgressDenied(Invalid):
    code = "egress_denied"

    def __init__(self, message: str):
        super().__init__(message, details=[{"field": "body.base_url", "message": message}])


@dataclass(frozen=True)
class _Rule:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    host: str | None
    port: int | None

    def admits(self, host: str, ip: Address, port: int | None) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            return ip in self.network
        return host == self.host


def _parse_rule(entry: str) -> _Rule:
    entry = entry.strip().lower()
    try:
        return _Rule(ipaddress.ip_network(entry, strict=False), None, None)
    except ValueError:
        pass
    parts = urlsplit(f"//{entry}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{SETTING}: cannot read {entry!r}") from None
    host = parts.hostname or ""
    if not host:
        raise ValueError(f"{SETTING}: cannot read {entry!r}")
    try:
        return _Rule(ipaddress.ip_network(host), None, port)
    except ValueError:
        return _Rule(None, host.rstrip("."), port)


def _rules(allow: list[str] | None) -> list[_Rule]:
    if allow is None:
        from service.core.config import get_settings

        allow = get_settings().egress_allow
    return [_parse_rule(e) for e in allow if e.strip()]


def _kind(ip: Address) -> str | None:
    """Why ``ip`` is internal, or None for a public address."""
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local (metadata service)" if str(ip) == "169.254.169.254" else "link-local"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "reserved"
    return None


def _resolve(host: str, port: int | None) -> list[Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise OSError(f"cannot resolve {host}") from exc
    out: list[Address] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if ip not in out:
            out.append(ip)
    return out


def check_addresses(host: str, port: int | None, *, allow: list[str] | None = None
                    ) -> list[Address]:
    """Resolve ``host`` and return its addresses; raise :class:`EgressDenied` if any is internal
    and not allow-listed. Raises ``OSError`` when the name does not resolve."""
    host = host.strip("[]").lower().rstrip(".")
    rules = _rules(allow)
    addresses = _resolve(host, port)
    for ip in addresses:
        kind = _kind(ip)
        if kind is None or any(r.admits(host, ip, port) for r in rules):
            continue
        shown = host if host == str(ip) else f"{host} ({ip})"
        raise EgressDenied(
            f"{shown} is a {kind} address, which providers may not reach; an admin can allow "
            f"it with the {SETTING} setting (e.g. {SETTING}='[\"{_example(host, ip, port)}\"]')")
    return addresses


def _example(host: str, ip: Address, port: int | None) -> str:
    name = f"[{ip}]" if ip.version == 6 and host == str(ip) else host
    return f"{name}:{port}" if port else name


def check_url(url: str, *, allow: list[str] | None = None, resolve: bool = True) -> None:
    """Refuse a URL the service must not call (:class:`EgressDenied`, a 422).

    A host name that does not resolve here is let through (the worker may see other DNS); the
    connection-time check in :func:`guarded_http_client` still applies to it.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise EgressDenied("the URL cannot be read") from None
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise EgressDenied(f"only http and https URLs are allowed, not {parts.scheme or 'none'}:")
    if not parts.hostname:
        raise EgressDenied("the URL has no host")
    if port is None:
        port = 443 if parts.scheme.lower() == "https" else 80
    if not resolve:
        return
    try:
        check_addresses(parts.hostname, port, allow=allow)
    except OSError:
        return


class EgressBlocked(httpcore.ConnectError):
    """Raised inside the HTTP client: it surfaces as a connection error carrying the reason."""


def denial_in(exc: BaseException | None) -> str | None:
    """The egress refusal behind a client exception (anywhere in its cause chain), if any."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, (EgressBlocked, EgressDenied)):
            return str(exc.message if isinstance(exc, EgressDenied) else exc)
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


class _GuardedBackend(httpcore.SyncBackend):
    """Connects only to addresses the policy admits: the check sees the address actually used."""

    def __init__(self, allow: list[str] | None) -> None:
        self._allow = allow

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None, socket_options: Any = None
                    ) -> httpcore.NetworkStream:
        try:
            addresses = check_addresses(host, port, allow=self._allow)
        except EgressDenied as exc:
            raise EgressBlocked(exc.message) from None
        last: Exception | None = None
        for ip in addresses:
            try:
                return super().connect_tcp(str(ip), port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                last = exc
        raise last or httpcore.ConnectError(f"cannot connect to {host}")


class GuardedTransport(httpx.HTTPTransport):
    """``connections``: how many it keeps open for reuse (and at least 100 at once)."""

    def __init__(self, *, allow: list[str] | None = None, verify: Any = True,
                 connections: int = 20) -> None:
        super().__init__(verify=verify, trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=max(100, connections), max_keepalive_connections=connections,
            keepalive_expiry=5.0, network_backend=_GuardedBackend(allow))


def _check_request(request: httpx.Request) -> None:
    if request.url.scheme not in ALLOWED_SCHEMES:
        raise httpx.ConnectError(f"only http and https URLs are allowed, not {request.url.scheme}:",
                                 request=request)


def guarded_http_client(*, timeout: float | httpx.Timeout, allow: list[str] | None = None,
                        max_redirects: int = 5, connections: int = 20) -> httpx.Client:
    """An httpx client under the egress policy (redirects followed, each hop checked), keeping
    up to ``connections`` connections open for reuse."""
    return httpx.Client(transport=GuardedTransport(allow=allow, connections=connections),
                        timeout=timeout,
                        follow_redirects=True, max_redirects=max_redirects, trust_env=False,
                        event_hooks={"request": [_check_request]})
