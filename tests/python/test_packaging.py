"""pyps imports from the build's python/ and installs with pip offline,
without hiding Debian's google.protobuf."""

import os
import pathlib
import shutil
import subprocess
import sys

SOURCE = pathlib.Path(__file__).resolve().parents[2]


def test_build_dir_imports_pyps_and_keeps_debians_google_protobuf():
    import google.protobuf
    import pyps
    from ps.v1 import parameter_server_pb2
    assert pathlib.Path(google.protobuf.__file__).is_relative_to(
        "/usr/lib/python3/dist-packages")
    assert hasattr(pyps, "Client")
    assert parameter_server_pb2.DESCRIPTOR.package == "ps.v1"


def test_pip_installs_offline_with_the_generated_code(tmp_path):
    # A copy of the sources, so the in-tree build writes nothing into ours.
    shutil.copytree(SOURCE / "worker/python", tmp_path / "worker/python",
                    ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                  "__pycache__"))
    shutil.copytree(SOURCE / "proto", tmp_path / "proto")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages",
                    "--without-pip", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PIP_NO_INDEX"] = "1"  # offline: no registry is asked
    subprocess.run([sys.executable, "-m", "pip", "--python",
                    str(venv / "bin/python"), "install", "--quiet",
                    "--no-build-isolation", "--no-deps",
                    str(tmp_path / "worker/python")], check=True, env=env)
    imported = subprocess.run(
        [str(venv / "bin/python"), "-c",
         "import pyps, ps.v1.parameter_server_pb2 as p, google.protobuf;"
         "print(pyps.__file__); print(p.__file__)"],
        check=True, env=env, cwd=tmp_path, capture_output=True, text=True)
    for path in imported.stdout.split():
        assert path.startswith(str(venv)), imported.stdout
