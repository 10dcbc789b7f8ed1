"""Builds pyps with the protocol's generated Python code beside it: protoc
and grpc_python_plugin (Debian: protobuf-compiler, protobuf-compiler-grpc)
run on the protos that proto/python_protos.txt lists, as CMake does."""

import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.environ.get("PS_PROTO_DIR",
                           os.path.join(HERE, "..", "..", "proto"))


class BuildWithProtos(build_py):
    def run(self):
        super().run()
        listed = os.path.join(PROTO_DIR, "python_protos.txt")
        if not os.path.exists(listed):
            raise SystemExit(f"pyps: {listed} not found: build from the "
                             "repository (worker/python), or set "
                             "PS_PROTO_DIR to its proto/ directory")
        with open(listed) as f:
            protos = [line.strip() for line in f if line.strip()]
        plugin = shutil.which("grpc_python_plugin")
        if plugin is None or shutil.which("protoc") is None:
            raise SystemExit("pyps: protoc and grpc_python_plugin are needed "
                             "(apt-get install protobuf-compiler "
                             "protobuf-compiler-grpc)")
        subprocess.run(
            ["protoc", f"-I{PROTO_DIR}", f"--python_out={self.build_lib}",
             f"--grpc_python_out={self.build_lib}",
             f"--plugin=protoc-gen-grpc_python={plugin}", *protos],
            check=True)


setup(cmdclass={"build_py": BuildWithProtos})
