"""TLS for the served mocks (`--tls`): `wss://` for clients that refuse plain `ws://`.

By default a throwaway certificate authority from `trustme` signs a certificate for localhost,
127.0.0.1, ::1 and the address served; only the CA certificate (public) is written to disk, for
the client to trust, and the private keys stay in memory. `--tls-cert FILE --tls-key FILE` serve
a certificate of the user's own instead. The options are added to a parser by `add_tls_options`
and read back by `tls_from_args`; bad files raise `TlsError` with one line naming the file.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import ssl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CA_FILE_NAME = "feedlab-ca.pem"
_WILDCARDS = ("", "0.0.0.0", "::")


class TlsError(ValueError):
    """A TLS option that cannot be used: one line, naming the option or file and the problem."""


@dataclass(frozen=True)
class Tls:
    """What a TLS-serving command needs: the server's context and, for a generated
    certificate, the CA file clients must trust (None for the user's own certificate)."""

    context: ssl.SSLContext
    ca_path: Path | None

    def notice(self) -> str:
        """The line printed before the URLs, so the user knows what to trust."""
        if self.ca_path is None:
            return "TLS: serving the certificate given with --tls-cert"
        return f"TLS: trust the CA in {self.ca_path}"


def server_context() -> ssl.SSLContext:
    """Server-side defaults of the standard library (TLS 1.2 or later, no client certificate),
    offering HTTP/1.1 by ALPN: a WebSocket handshake is an HTTP/1.1 request."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.set_alpn_protocols(["http/1.1"])
    return context


def identities(host: str) -> list[str]:
    """Names the generated certificate is valid for: loopback, plus the address served (or,
    bound to every interface, this machine's name) so clients on other machines can verify it."""
    names = ["localhost", "127.0.0.1", "::1"]
    extra = socket.gethostname() if host in _WILDCARDS else host.strip("[]")
    if extra and extra not in names:
        names.append(extra)
    return names


def generate(host: str, ca_out: Path) -> Tls:
    """A fresh CA and a leaf certificate for `identities(host)`; the CA is written to `ca_out`."""
    import trustme  # here: only `--tls` pays for loading `cryptography`

    ca = trustme.CA(organization_name="feedlab")
    leaf = ca.issue_cert(*identities(host), organization_name="feedlab")
    context = server_context()
    leaf.configure_cert(context)
    try:
        ca.cert_pem.write_to_path(str(ca_out))
    except OSError as exc:
        raise TlsError(f"--tls-ca-out {ca_out}: cannot write it ({exc.strerror or exc})") from None
    return Tls(context, ca_out.resolve())


class _EncryptedKey(Exception):
    pass


def _refuse_password() -> str:
    # OpenSSL would otherwise prompt on the terminal, or hang a server started without one.
    raise _EncryptedKey


def _pem_file(option: str, path: Path, marker: str, what: str) -> None:
    try:
        text = path.read_bytes()
    except IsADirectoryError:
        raise TlsError(f"{option} {path}: is a directory") from None
    except OSError as exc:
        raise TlsError(f"{option} {path}: cannot read it ({exc.strerror or exc})") from None
    if marker.encode() not in text:
        raise TlsError(f"{option} {path}: no PEM {what} in it")


def load(cert: Path, key: Path) -> Tls:
    """The user's own certificate (chain) and unencrypted private key, both PEM."""
    _pem_file("--tls-cert", cert, "-----BEGIN CERTIFICATE-----", "certificate")
    _pem_file("--tls-key", key, "PRIVATE KEY-----", "private key")
    context = server_context()
    try:
        context.load_cert_chain(cert, key, password=_refuse_password)
    except _EncryptedKey:
        raise TlsError(f"--tls-key {key}: the key is encrypted; give an unencrypted one") from None
    except ssl.SSLError as exc:
        raise TlsError(
            f"--tls-cert {cert} / --tls-key {key}: not a certificate and its private key "
            f"({exc.reason or exc})"
        ) from None
    return Tls(context, None)


# -- command line ------------------------------------------------------------------------------


def add_tls_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve wss:// with a certificate from a throwaway CA (its path is printed)",
    )
    parser.add_argument(
        "--tls-cert",
        default=None,
        metavar="FILE",
        help="serve wss:// with this PEM certificate (chain) instead; needs --tls-key",
    )
    parser.add_argument(
        "--tls-key", default=None, metavar="FILE", help="the PEM private key of --tls-cert"
    )
    parser.add_argument(
        "--tls-ca-out",
        default=None,
        metavar="FILE",
        help="with --tls: write the CA certificate here (default: a new temporary directory)",
    )


@contextmanager
def tls_from_args(args: argparse.Namespace, host: str) -> Iterator[Tls | None]:
    """The TLS the options ask for (None: plain ws://), for the life of the server. A CA
    written to a temporary directory is removed when the server stops: it signs nothing else."""
    cert, key, ca_out = args.tls_cert, args.tls_key, args.tls_ca_out
    if (cert is None) != (key is None):
        raise TlsError("--tls-cert and --tls-key go together")
    if cert is not None:
        if ca_out is not None:
            raise TlsError("--tls-ca-out is for the generated CA, not with --tls-cert")
        yield load(Path(cert), Path(key))
        return
    if not args.tls:
        if ca_out is not None:
            raise TlsError("--tls-ca-out goes with --tls")
        yield None
        return
    if ca_out is not None:
        path = Path(ca_out)
        if path.is_dir():
            raise TlsError(f"--tls-ca-out {path}: is a directory")
        if not path.parent.is_dir():
            raise TlsError(f"--tls-ca-out {path}: no such directory: {path.parent}")
        yield generate(host, path)
        return
    directory = Path(tempfile.mkdtemp(prefix="feedlab-tls-"))
    try:
        yield generate(host, directory / CA_FILE_NAME)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
