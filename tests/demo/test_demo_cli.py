"""`fastclipseg demo`: its argument checks, the one-line error without the demo extra, and a real
server process that prints its URL and answers."""

from __future__ import annotations

import importlib.util
import json
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from helpers.cli_checks import error_line, invoke


def test_without_the_demo_extra_it_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    line = error_line(invoke("demo", "--model", "never-loaded"), 2, 'pip install "fastclipseg[demo]"', "fastapi")
    assert "uvicorn" not in line


@pytest.mark.parametrize("args, names", [
    (["--images", "no-such-folder"], ["--images", "no-such-folder"]),
    (["--max-upload-mb", "0"], ["--max-upload-mb"]),
    (["--max-upload-mb", "nan"], ["--max-upload-mb"]),
    (["--port", "70000"], ["--port"]),
    (["--threshold", "2"], ["threshold"]),
    (["--max-pixels", "0"], ["--max-pixels"]),
    (["--backend", "nope"], ["--backend"]),
])
def test_bad_options_fail_before_the_model_loads(args, names):
    pytest.importorskip("fastapi", reason='the demo extra is not installed: pip install "fastclipseg[demo]"')
    error_line(invoke("demo", "--model", "never-loaded", *args), 2, *names)


def test_a_port_in_use_is_a_clear_error():
    pytest.importorskip("fastapi", reason='the demo extra is not installed: pip install "fastclipseg[demo]"')
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        error_line(invoke("demo", "--model", "never-loaded", "--port", port), 2, "cannot listen", str(port))


def test_the_command_serves_the_page(tiny_model_dir, demo_images):
    pytest.importorskip("fastapi", reason='the demo extra is not installed: pip install "fastclipseg[demo]"')
    process = subprocess.Popen(
        [sys.executable, "-m", "fastclipseg", "demo", "--model", str(tiny_model_dir), "--port", "0",
         "--images", str(demo_images)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("fastclipseg demo: http://127.0.0.1:"), (line, process.stderr.read())
        url = line.split()[2]
        page = urllib.request.urlopen(url, timeout=10).read().decode()
        assert 'id="prompt"' in page
        config = json.load(urllib.request.urlopen(url + "api/config", timeout=10))
        assert config["images"] == ["more/room.jpg", "street.png"]
        # On the loopback address, another Host header (DNS rebinding) is refused.
        request = urllib.request.Request(url + "api/config", headers={"Host": "attacker.example"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 400
    finally:
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    # Ctrl-C ends it cleanly: 128 + SIGINT as the other commands (uvicorn >= 0.29 re-raises the
    # signal after shutting down; older releases exit 0), and no traceback.
    errors = process.stderr.read()
    assert process.returncode in (0, 128 + signal.SIGINT), errors
    assert "Traceback" not in errors
