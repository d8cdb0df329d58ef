"""A failed exchange with an MLflow tracking server, told by what it is (an HTTP status, a
dropped connection, no answer in time), whichever MLflow or requests version reports it and
however deep it wraps it: mlflow 3.17 surfaced a 503 as urllib3's retry error in the cause chain,
3.18 as a bare MlflowException whose message carries the status. The standard library only:
the CLI's error path must not import MLflow to explain MLflow's failure."""

from __future__ import annotations

import re
from collections.abc import Iterator

# MLflow's non-JSON answers ("API request to endpoint /api/2.0/... failed with error code 503
# != 200") and urllib3's exhausted retries ("too many 503 error responses").
_STATUS_IN_TEXT = (
    re.compile(r"failed with error code (\d{3})"),
    re.compile(r"too many (\d{3}) error responses"),
)
_TIMED_OUT = re.compile(r"timed out|TimeoutError")
_ENDPOINT = re.compile(r"(/api/[\w./-]+)")
# Class names of transport failures in requests, urllib3 and http.client (matched by name, so
# neither is imported here and a wrapper that renames nothing is still recognised).
_DROPPED = {
    "ConnectionError",
    "ChunkedEncodingError",
    "ProtocolError",
    "RemoteDisconnected",
    "IncompleteRead",
    "NewConnectionError",
    "BadStatusLine",
}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _status(exc: BaseException) -> int | None:
    """The HTTP status an exception reports, where it reports one as a failure of the server
    (an MLflow API error the server itself returned below 500, e.g. RESOURCE_DOES_NOT_EXIST, is
    an answer, not a failed exchange)."""
    text = str(exc)
    for pattern in _STATUS_IN_TEXT:
        found = pattern.search(text)
        if found:
            return int(found.group(1))
    response = getattr(exc, "response", None)  # requests' HTTPError
    code = getattr(response, "status_code", None)
    if isinstance(code, int) and code >= 400:
        return code
    if type(exc).__name__ == "RestException":  # a JSON error body: the server spoke MLflow
        getter = getattr(exc, "get_http_status_code", None)
        status = getter() if callable(getter) else None
        if isinstance(status, int) and status >= 500:
            return status
    return None


def tracking_failure(exc: BaseException) -> str:
    """What failed, as a short phrase ("HTTP 503 on /api/2.0/mlflow/runs/search", "connection
    dropped (RemoteDisconnected: ...)", "no answer in time (...)"), when `exc` or anything in its
    chain is a failed exchange with a tracking server; "" otherwise."""
    endpoint = next((m.group(1) for e in _chain(exc) if (m := _ENDPOINT.search(str(e)))), "")
    where = f" on {endpoint}" if endpoint else ""
    for seen in _chain(exc):
        status = _status(seen)
        if status is not None:
            return f"HTTP {status}{where}"
    chain = list(_chain(exc))
    # Timeouts first: requests reports a read timeout after retries as a ConnectionError whose
    # text names urllib3's ReadTimeoutError.
    for seen in chain:
        name, detail = type(seen).__name__, _first_line(seen)
        if isinstance(seen, TimeoutError) or "Timeout" in name or _TIMED_OUT.search(detail):
            return f"no answer in time{where} ({name}: {detail})"
    for seen in chain:
        name = type(seen).__name__
        if isinstance(seen, ConnectionError) or name in _DROPPED:
            return f"connection dropped{where} ({name}: {_first_line(seen)})"
    return ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 120 else line[:117] + "..."
