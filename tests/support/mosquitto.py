"""Brokers for tests: the shared Mosquitto launcher, and TLS files made with openssl."""

from __future__ import annotations

import asyncio
from pathlib import Path

from simulators.broker import Mosquitto, TlsFiles, find_program, free_port

__all__ = ["Mosquitto", "TlsFiles", "free_port", "make_tls_files"]


async def make_tls_files(directory: Path) -> TlsFiles:
    """A private CA and a server certificate for 127.0.0.1 and localhost, made with openssl."""
    directory.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240  # a local tmp dir, instant
    ca_key, ca, key, csr, cert = (
        directory / name for name in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    await _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=hallgw test CA",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
    )
    await _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        str(key),
        "-out",
        str(csr),
    )
    await _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(ext),
        "-out",
        str(cert),
    )
    return TlsFiles(ca=ca, cert=cert, key=key)


async def _openssl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        find_program("openssl"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {output.decode(errors='replace')}")
