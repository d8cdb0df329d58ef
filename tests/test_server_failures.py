"""A tracking server that answers /health and the CLI's own light lookups, then fails MLflow's
client in each way a server can fail: an HTTP status (503, 500, 404, with or without MLflow's
JSON error body), a connection closed mid-response, no answer at all. Every mode ends a command
with exit 2 and one line naming the server and what failed, within the limit, on the locked
MLflow (sweeps.server_errors tells the failures apart by what they are)."""

import http.server
import json
import threading
import time

import pytest
from mlflow.exceptions import MlflowException, RestException
from test_hardening import _PARENT_RUN  # the sweep `s` the light lookups find

from sweeps import cli
from sweeps.server_errors import tracking_failure

LIMIT_S = 15.0


def _server(mode: str, release: threading.Event) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            light = "Python-urllib" in self.headers.get("User-Agent", "")
            if self.path == "/health" or light:  # /health and sweeps.locations' lookups
                found = (
                    {"experiments": [{"experiment_id": "1"}]}
                    if "experiments/search" in self.path
                    else {"runs": [_PARENT_RUN]}
                )
                self._send(200, json.dumps(found).encode())
            elif mode.startswith("status"):
                code = int(mode.split("-")[1])
                self._send(code, b"<html>upstream failure</html>")
            elif mode == "json-500":
                body = {"error_code": "INTERNAL_ERROR", "message": "database is locked"}
                self._send(500, json.dumps(body).encode())
            elif mode == "dropped":  # headers promise a body that never comes
                self.send_response(200)
                self.send_header("Content-Length", "4096")
                self.end_headers()
                self.wfile.write(b'{"runs": [')
                self.wfile.flush()
                self.connection.shutdown(2)
                self.close_connection = True
            elif mode == "silent":
                release.wait(30)

        def _send(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args) -> None:
            pass

    return http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)


MODES = {
    "status-503": "HTTP 503",
    "status-500": "HTTP 500",
    "status-404": "HTTP 404",
    "json-500": "HTTP 500",
    "dropped": "connection dropped",
    "silent": "no answer in time",
}


@pytest.mark.parametrize("command", [["analyze", "s"], ["compare", "a", "b"]])
@pytest.mark.parametrize("mode", MODES)
def test_every_failed_exchange_is_one_line_naming_server_and_failure(
    tmp_path, capsys, monkeypatch, mode, command
):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")  # the user's setting wins over ours
    release = threading.Event()
    server = _server(mode, release)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    start = time.monotonic()
    try:
        code = cli.main([*command, "--tracking-uri", uri, "--root", str(tmp_path)])
    finally:
        release.set()
        server.shutdown()
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith(("note:", "warn"))]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("headsweep: error:"), err
    assert uri in lines[0] and MODES[mode] in lines[0], err
    assert "Traceback" not in err
    assert elapsed < LIMIT_S, f"{elapsed:.1f} s"


def _raised(exc: BaseException, cause: BaseException | None, implicit: bool) -> BaseException:
    """`exc` raised while handling `cause` (implicit: MLflow's `raise` without `from`)."""
    try:
        try:
            if cause is not None:
                raise cause
        except BaseException:
            if implicit:
                raise exc  # noqa: B904
            raise exc from cause
        raise exc
    except BaseException as got:
        return got


class MaxRetryError(Exception):  # urllib3's, by name (as MLflow 3.17 reported a 503)
    pass


class RemoteDisconnected(Exception):  # http.client's, by name
    pass


@pytest.mark.parametrize(
    ("exc", "phrase"),
    [
        # 3.18: a non-JSON answer, no transport error anywhere in the chain
        (
            MlflowException(
                "API request to endpoint /api/2.0/mlflow/runs/search failed with error code "
                "503 != 200. Response body: 'x'"
            ),
            "HTTP 503 on /api/2.0/mlflow/runs/search",
        ),
        # 3.17: retries exhausted, urllib3's error as the implicit context
        (
            _raised(
                MlflowException("API request to http://h/api/2.0/mlflow/runs/search failed"),
                MaxRetryError("Max retries exceeded (too many 503 error responses)"),
                implicit=True,
            ),
            "HTTP 503 on /api/2.0/mlflow/runs/search",
        ),
        (
            _raised(MlflowException("wrapped"), RemoteDisconnected("closed"), implicit=False),
            "connection dropped",
        ),
        (_raised(RuntimeError("x"), TimeoutError("timed out"), implicit=False), "no answer"),
        (RestException({"error_code": "INTERNAL_ERROR", "message": "boom"}), "HTTP 500"),
    ],
)
def test_failures_are_told_apart_however_they_are_wrapped(exc, phrase):
    assert phrase in tracking_failure(exc)


@pytest.mark.parametrize(
    "exc",
    [
        RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no run r1"}),
        ValueError("a bug of ours"),
        MlflowException("Invalid experiment name"),
    ],
)
def test_an_answer_or_a_bug_is_not_a_failed_exchange(exc):
    """The server's own answer (a 404 with MLflow's JSON body) and our bugs keep exit 1 with
    their own message."""
    assert tracking_failure(exc) == ""
