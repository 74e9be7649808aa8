"""The thin HTTPS adapter between the life-cycle machine and the gateway's control API.

Standard library only (http.client + ssl): the appliance image stays small, and the four
calls it makes need nothing more. Each call returns the parsed wire model or a `Failure`;
nothing the network or the gateway does raises out of here.

Trust: enrollment calls verify the gateway with the operator CA baked into the image; once
enrolled, /v1/device/* verify it with the CA the gateway returned and present the device
certificate (mutual TLS).
"""

from __future__ import annotations

import errno
import http.client
import json
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from cjb.appliance.keys import FactoryIdentity
from cjb.appliance.lifecycle import Failure, FailureKind
from cjb.common.control.protocol import (
    SIGNATURE_HEADER,
    DeviceConfig,
    EnrollRequest,
    EnrollResponse,
    ErrorBody,
    Heartbeat,
    HeartbeatResponse,
    NonceResponse,
)
from cjb.common.validation import validation_problems

MAX_RESPONSE = 1 << 20  # bytes; a config with a big catalog is a few KB
Model = TypeVar("Model", bound=BaseModel)

# TLS alerts a server sends when it does not accept our client certificate (RFC 8446 §6.2).
_CLIENT_CERT_ALERTS = (
    "CERTIFICATE_REVOKED",
    "CERTIFICATE_EXPIRED",
    "BAD_CERTIFICATE",
    "UNKNOWN_CA",
    "CERTIFICATE_UNKNOWN",
    "ACCESS_DENIED",
    "CERTIFICATE_REQUIRED",
)


class ControlClientError(ValueError):
    """The gateway URL itself is unusable; the message says how to fix it."""


@dataclass(frozen=True, slots=True)
class DeviceCredentials:
    ca_file: Path
    cert_file: Path
    key_file: Path


def _describe_os_error(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the gateway's name: {exc.strerror}"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if exc.errno is not None:
        return os_strerror(exc.errno)
    return str(exc) or type(exc).__name__


def os_strerror(code: int) -> str:
    names = {
        errno.ECONNREFUSED: "connection refused",
        errno.ENETUNREACH: "network unreachable",
        errno.EHOSTUNREACH: "no route to host",
        errno.ECONNRESET: "connection reset",
        errno.ETIMEDOUT: "timed out",
    }
    return names.get(code, f"errno {code}")


class ControlClient:
    def __init__(self, gateway_url: str, operator_ca: Path, timeout: float = 10.0) -> None:
        parts = urlsplit(gateway_url.strip())
        if parts.scheme != "https" or not parts.hostname:
            raise ControlClientError(
                f"gateway URL {gateway_url!r}: must be https://HOST[:PORT] "
                "(the image's /etc/cjb/gateway-url)"
            )
        self.url = gateway_url.strip().rstrip("/")
        self.host = parts.hostname
        self.port = parts.port or 443
        self.operator_ca = operator_ca
        self.timeout = timeout
        self.credentials: DeviceCredentials | None = None

    # -- the four calls -----------------------------------------------------------------

    def nonce(self) -> NonceResponse | Failure:
        return self._call("POST", "/v1/enroll/nonce", None, {}, NonceResponse, device=False)

    def enroll(self, request: EnrollRequest, identity: FactoryIdentity) -> EnrollResponse | Failure:
        # Sign exactly the bytes we send: the gateway verifies the body as received.
        body = request.model_dump_json().encode()
        headers = {SIGNATURE_HEADER: identity.sign_body(body)}
        return self._call("POST", "/v1/enroll", body, headers, EnrollResponse, device=False)

    def config(self) -> DeviceConfig | Failure:
        return self._call("GET", "/v1/device/config", None, {}, DeviceConfig, device=True)

    def heartbeat(self, beat: Heartbeat) -> HeartbeatResponse | Failure:
        body = beat.model_dump_json().encode()
        return self._call("POST", "/v1/device/heartbeat", body, {}, HeartbeatResponse, device=True)

    # -- plumbing -----------------------------------------------------------------------

    def _context(self, device: bool) -> ssl.SSLContext | Failure:
        try:
            if not device:
                return ssl.create_default_context(cafile=str(self.operator_ca))
            creds = self.credentials
            if creds is None:
                return Failure(FailureKind.AUTH, "no device certificate yet")
            ctx = ssl.create_default_context(cafile=str(creds.ca_file))
            ctx.load_cert_chain(str(creds.cert_file), str(creds.key_file))
            return ctx
        except FileNotFoundError:
            # No operator CA: the image is broken; retrying will not help, saying so will.
            if not device:
                what = f"{self.operator_ca}: missing (the image must carry the operator CA)"
            else:
                what = "device credentials missing from the state directory (re-enroll)"
            return Failure(FailureKind.UNTRUSTED, what)
        except (ssl.SSLError, ValueError) as exc:
            return Failure(FailureKind.UNTRUSTED, f"cannot load trust or credentials: {exc}")

    def _call(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        model: type[Model],
        *,
        device: bool,
    ) -> Model | Failure:
        ctx = self._context(device)
        if isinstance(ctx, Failure):
            return ctx
        conn = http.client.HTTPSConnection(self.host, self.port, context=ctx, timeout=self.timeout)
        send_headers = {"Accept": "application/json", **headers}
        if body is not None:
            send_headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=body, headers=send_headers)
            response = conn.getresponse()
            data = response.read(MAX_RESPONSE + 1)
            status = response.status
        except ssl.SSLCertVerificationError as exc:
            return Failure(FailureKind.UNTRUSTED, exc.verify_message or str(exc))
        except ssl.SSLError as exc:
            reason = exc.reason or ""
            if device and any(alert in reason for alert in _CLIENT_CERT_ALERTS):
                return Failure(FailureKind.AUTH, f"TLS alert {reason}")
            return Failure(FailureKind.UNREACHABLE, f"TLS failed: {reason or exc}")
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, OSError):
                return Failure(FailureKind.UNREACHABLE, _describe_os_error(exc))
            return Failure(FailureKind.UNREACHABLE, f"HTTP failed: {type(exc).__name__}")
        finally:
            conn.close()
        if len(data) > MAX_RESPONSE:
            return Failure(FailureKind.BAD_RESPONSE, f"response larger than {MAX_RESPONSE} bytes")
        if 200 <= status < 300:
            return self._parse(data, model, status)
        return self._error(status, data, device)

    @staticmethod
    def _parse(data: bytes, model: type[Model], status: int) -> Model | Failure:
        try:
            return model.model_validate_json(data)
        except ValidationError as exc:
            first = (validation_problems(exc, top="body") or ["body: invalid"])[0]
            return Failure(
                FailureKind.BAD_RESPONSE, f"HTTP {status} body is not a {model.__name__}: {first}"
            )

    @staticmethod
    def _error(status: int, data: bytes, device: bool) -> Failure:
        code, message = None, ""
        try:
            err = ErrorBody.model_validate(json.loads(data))
            code, message = err.error, err.message
        except (ValueError, ValidationError):
            message = data[:200].decode(errors="replace").strip()
        if device and status in (401, 403):
            kind = FailureKind.AUTH
        elif 400 <= status < 500:
            kind = FailureKind.REFUSED
        elif status >= 500:
            kind = FailureKind.SERVER
        else:
            kind = FailureKind.BAD_RESPONSE
        return Failure(kind, message or http.client.responses.get(status, ""), status, code)
