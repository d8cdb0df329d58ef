"""Issue 14's battery, through the real entry point (`python -m sweeps.cli`, a fresh process):
exit codes, one-line errors without tracebacks, time limits, nothing written, and which heavy
packages the read-only commands import. tests/test_hardening.py has the in-process cases."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import write_spec

REPO = Path(__file__).resolve().parents[1]
LIMIT_S = 15.0


def nothing_in(path: Path) -> bool:
    return not path.exists() or not any(path.iterdir())


def test_read_only_commands_import_neither_torch_nor_ray(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        script = (
            "import sys\nfrom sweeps import cli\n"
            f"root = {str(tmp_path / 'runs')!r}\n"
            "codes = [cli.main(['list', '--root', root]),"
            " cli.main(['status', 's', '--root', root]),"
            " cli.main(['compare', 'a', 'b', '--root', root]),"
            f" cli.main(['ui', '--port', '{port}', '--root', root])]\n"
            "heavy = sorted(m for m in ('torch', 'ray', 'mlflow') if m in sys.modules)\n"
            "print(codes, heavy)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60
        )
    assert out.stdout.strip().endswith("[0, 2, 2, 2] []"), out.stdout + out.stderr
    assert f"127.0.0.1:{port}" in out.stderr  # ui: the port is taken, exit 2, nothing started


def headsweep(*args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "sweeps.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
        timeout=timeout,
        cwd=REPO,
    )
    return out, time.monotonic() - start


def test_entry_point_refuses_an_escaping_name_fast_and_writes_nothing(tmp_path):
    spec = write_spec(tmp_path / "s.yaml")
    root = tmp_path / "runs"
    out, seconds = headsweep("run", spec, "--name", "../../x", "--root", root)
    assert out.returncode == 2 and seconds < LIMIT_S
    assert len(out.stderr.strip().splitlines()) == 1 and "--name" in out.stderr
    assert not root.exists() and not (tmp_path.parent / "x").exists()


def test_entry_point_list_on_an_empty_root_is_quick_and_writes_nothing(tmp_path):
    root = tmp_path / "runs"
    out, seconds = headsweep("list", "--root", root)
    assert out.returncode == 0 and "no sweeps yet" in out.stdout
    assert seconds < LIMIT_S and nothing_in(root)


def test_entry_point_spec_errors_have_no_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    out, seconds = headsweep("run", path, "--dry-run")
    assert out.returncode == 2 and seconds < LIMIT_S
    assert "Traceback" not in out.stderr and str(path) in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
