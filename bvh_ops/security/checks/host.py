"""Host and deployment checks (Lynis-like, no root assumed): permissions of bvh-ops' secrets and
of the PostgreSQL data directory, world-writable files under configured trees, listening
sockets against the expected ports (psutil), TLS certificates of the configured endpoints and
certificate files. Everything comes from configuration; what is not configured or cannot be
read is *not checked*, with the reason. The pure evaluators (``mode_finding``, ``cert_findings``)
take plain values; the scanners around them do the I/O."""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import stat
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from bvh_ops.config import SecuritySettings, Settings, config_file_path
from bvh_ops.security.model import Finding, NotChecked, Outcome

_LOOPBACK_ADDRS = ("127.0.0.1", "::1", "0:0:0:0:0:0:0:1")


def _describe_mode(mode: int) -> str:
    return f"mode {stat.S_IMODE(mode):04o} ({stat.filemode(mode)})"


def mode_finding(check_id: str, path: Path, mode: int) -> Finding | None:
    """The permission finding for ``path`` with st_mode ``mode``, or None when it is tight enough.
    Secrets (config, keys): any group/other bit. State dir: group/other access (high when
    others may write). Data directory: beyond PostgreSQL's own 0750 (others, or group write)."""
    perm = stat.S_IMODE(mode)
    what = f"{path}: {_describe_mode(mode)}"
    if check_id == "HOST-PERM-001":
        if perm & 0o006:
            return Finding(check_id, str(path), f"{what}: others may read or write it")
        if perm & 0o070:
            return Finding(check_id, str(path), f"{what}: its group may read it", "medium")
        return None
    if check_id in ("HOST-PERM-002", "HOST-PERM-003"):
        return Finding(check_id, str(path), f"{what}: readable beyond its owner") if perm & 0o077 else None
    if check_id == "HOST-PERM-004":
        if perm & 0o002:
            return Finding(check_id, str(path), f"{what}: others may write it", "high")
        return Finding(check_id, str(path), f"{what}: open to group or others") if perm & 0o077 else None
    if check_id == "HOST-PERM-005":
        return Finding(check_id, str(path), f"{what}: beyond 0750") if perm & 0o027 else None
    raise ValueError(f"not a permission check: {check_id}")


def _permission(out: Outcome, check_id: str, path: Path | None, absent: str) -> None:
    if path is None:
        out.not_checked.append(NotChecked(check_id, absent))
        return
    try:
        st = os.stat(path)
    except FileNotFoundError:
        out.not_checked.append(NotChecked(check_id, f"{path} does not exist"))
        return
    except OSError as exc:
        out.not_checked.append(NotChecked(check_id, f"{path}: {exc.strerror or exc}"))
        return
    out.checked += 1
    if (f := mode_finding(check_id, Path(path), st.st_mode)) is not None:
        out.findings.append(f)


def check_permissions(settings: Settings) -> Outcome:
    out = Outcome()
    state = Path(settings.state_dir)
    _permission(out, "HOST-PERM-001", config_file_path(), "no config file (settings from the environment only)")
    _permission(out, "HOST-PERM-002", settings.identity, "no identity configured on this host (a backup host "
                                                         "needs only public keys)")
    _permission(out, "HOST-PERM-003", state / "host_ed25519.key", "")
    _permission(out, "HOST-PERM-004", state, "")
    _permission(out, "HOST-PERM-005", settings.security.pg_data_dir, "[security] pg_data_dir is not set")
    return out


def world_writable(paths: list[Path], max_files: int) -> Outcome:
    """HOST-FS-001 over each tree (symbolic links not followed; sticky directories such as /tmp
    are fine). Unreadable directories and the entry bound are reported as not checked."""
    out = Outcome()
    if not paths:
        out.not_checked.append(NotChecked("HOST-FS-001", "[security] paths is empty"))
        return out
    errors: list[str] = []
    seen = 0
    truncated = False
    for root in paths:
        if not os.path.exists(root):
            errors.append(f"{root} does not exist")
            continue
        for dirpath, dirnames, filenames in os.walk(root, onerror=lambda e: errors.append(f"{e.filename}: "
                                                                                          f"{e.strerror}")):
            for name in [""] + dirnames + filenames:
                seen += 1
                if seen > max_files:
                    truncated = True
                    break
                p = os.path.join(dirpath, name) if name else dirpath
                if name in dirnames:
                    continue  # directories are looked at as their own dirpath
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if stat.S_ISLNK(st.st_mode) or not st.st_mode & stat.S_IWOTH:
                    continue
                if stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX:
                    continue
                kind = "directory" if stat.S_ISDIR(st.st_mode) else "file"
                out.findings.append(Finding("HOST-FS-001", p, f"{kind} {p}: {_describe_mode(st.st_mode)}"))
            if truncated:
                break
        if truncated:
            break
    out.checked += 1
    if truncated:
        out.not_checked.append(NotChecked("HOST-FS-001", f"stopped after {max_files} entries (max_files): "
                                                         "the rest was not searched"))
    if errors:
        out.not_checked.append(NotChecked("HOST-FS-001", f"{len(errors)} path(s) not searched, first: {errors[0]}"))
    return out


def listening_ports(sec: SecuritySettings) -> Outcome:
    """HOST-NET-001: TCP listeners (non-loopback unless include_loopback) not in expected_ports."""
    out = Outcome()
    if not sec.expected_ports:
        out.not_checked.append(NotChecked("HOST-NET-001", "[security] expected_ports is empty"))
        return out
    import psutil

    try:
        conns = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError) as exc:
        out.not_checked.append(NotChecked("HOST-NET-001", f"sockets not readable: {exc}"))
        return out
    out.checked += 1
    seen = set()
    for c in conns:
        if c.status != psutil.CONN_LISTEN or not c.laddr:
            continue
        ip, port = c.laddr.ip, c.laddr.port
        if port in sec.expected_ports or (ip in _LOOPBACK_ADDRS or ip.startswith("127.")) and not sec.include_loopback:
            continue
        if (ip, port) in seen:
            continue
        seen.add((ip, port))
        who = ""
        if c.pid:
            try:
                who = f" by {psutil.Process(c.pid).name()} (pid {c.pid})"
            except (psutil.Error, OSError):
                who = f" by pid {c.pid}"
        out.findings.append(Finding("HOST-NET-001", f"port {port}", f"tcp {ip}:{port} is listening{who}"))
    return out


# -- TLS certificates -----------------------------------------------------------------------

def host_matches(cert, host: str) -> bool:
    """Does the certificate's subjectAltName cover ``host`` (DNS, one-label wildcard, or IP)?"""
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        ip = ipaddress.ip_address(host)
        return ip in san.get_values_for_type(x509.IPAddress)
    except ValueError:
        pass
    host = host.lower().rstrip(".")
    for name in san.get_values_for_type(x509.DNSName):
        name = name.lower().rstrip(".")
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def cert_findings(cert, where: str, host: str | None, now: datetime, sec: SecuritySettings) -> list[Finding]:
    """Expiry (high when expired or within 7 days, medium within cert_warning_days), key size
    (RSA/DSA below min_rsa_bits, EC below 256 bits) and, for an endpoint, the host name."""
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa

    out = []
    not_after = cert.not_valid_after_utc
    days = (not_after - now).total_seconds() / 86400
    if days < sec.cert_warning_days:
        state = "expired" if days < 0 else f"expires in {days:.0f} days"
        out.append(Finding("HOST-TLS-001", where, f"{where}: certificate {state} ({not_after:%Y-%m-%d %H:%M} UTC)",
                           "high" if days < 7 else "medium"))
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey | dsa.DSAPublicKey) and key.key_size < sec.min_rsa_bits:
        out.append(Finding("HOST-TLS-002", where, f"{where}: {key.key_size}-bit key (< {sec.min_rsa_bits})"))
    elif isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size < 256:
        out.append(Finding("HOST-TLS-002", where, f"{where}: {key.curve.name} key ({key.curve.key_size} bits)"))
    if host is not None and not host_matches(cert, host):
        out.append(Finding("HOST-TLS-003", where, f"{where}: certificate does not name {host} in subjectAltName"))
    return out


def fetch_certificate(host: str, port: int, timeout: float):
    """The server's leaf certificate (not verified here: we judge it ourselves)."""
    from cryptography import x509

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=timeout) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der)


def tls_targets(settings: Settings) -> list[tuple[str, int]]:
    targets = []
    for e in settings.endpoints:
        parts = urlsplit(e.url)
        if parts.scheme == "https" and parts.hostname:
            targets.append((parts.hostname, parts.port or 443))
    for item in settings.security.tls_endpoints:
        host, _, port = item.rpartition(":")
        targets.append((host.strip("[]"), int(port)))
    return list(dict.fromkeys(targets))


def check_certificates(settings: Settings, now: datetime | None = None) -> Outcome:
    from cryptography import x509

    sec = settings.security
    now = now or datetime.now(UTC)
    out = Outcome()
    evaluated = 0
    targets = tls_targets(settings)
    for host, port in targets:
        where = f"{host}:{port}"
        try:
            cert = fetch_certificate(host, port, sec.tls_timeout_seconds)
        except (OSError, ValueError) as exc:
            out.not_checked.append(NotChecked("HOST-TLS-001", f"{where}: no certificate read ({exc})"))
            continue
        evaluated += 1
        out.findings += cert_findings(cert, where, host, now, sec)
    for path in sec.cert_files:
        try:
            cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
        except FileNotFoundError:
            out.not_checked.append(NotChecked("HOST-TLS-001", f"certificate file {path} does not exist"))
            continue
        except (OSError, ValueError) as exc:
            out.not_checked.append(NotChecked("HOST-TLS-001", f"certificate file {path}: {exc}"))
            continue
        evaluated += 1
        out.findings += cert_findings(cert, str(path), None, now, sec)
    if not targets and not sec.cert_files:
        out.not_checked += [NotChecked(i, "no https endpoints, tls_endpoints or cert_files configured")
                            for i in ("HOST-TLS-001", "HOST-TLS-002", "HOST-TLS-003")]
    elif evaluated:
        out.checked += 3
    return out


def scan_host(settings: Settings, now: datetime | None = None) -> Outcome:
    out = check_permissions(settings)
    out.extend(world_writable(list(settings.security.paths), settings.security.max_files))
    out.extend(listening_ports(settings.security))
    out.extend(check_certificates(settings, now))
    return out
