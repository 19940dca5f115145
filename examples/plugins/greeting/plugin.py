#!/usr/bin/env python3
"""A berth isolator plugin in Python: every container gets
PLUGIN_GREETING=hello in its environment and a `plugin.txt` in its sandbox.

Run by berth: `greeting.json` in the agent's --plugin-dir names this file as
its `command`; berth starts it with BERTH_PLUGIN_SOCKET set and restarts it
if it dies. Needs the grpcio and grpcio-tools packages (pip install grpcio
grpcio-tools): the messages are built at start from berth's own .proto files
(grpc.protos_and_services), so nothing generated is kept in the repository
and nothing can drift from the protocol or from the protobuf runtime.
"""

import os
import signal
import sys
import threading
from concurrent import futures

HERE = os.path.dirname(os.path.abspath(__file__))
# berth's protos: state/proto in the repository, or wherever
# BERTH_PROTO_DIR says (an installed copy).
PROTO_DIR = os.environ.get(
    "BERTH_PROTO_DIR", os.path.join(HERE, "..", "..", "..", "state", "proto")
)
sys.path.insert(0, os.path.abspath(PROTO_DIR))

import grpc  # noqa: E402

pb, rpc = grpc.protos_and_services("berth/plugin/v1/isolator.proto")
model = grpc.protos("berth/v1/model.proto")

PROTOCOL_VERSION = 1
# A new value each start: berth then sends Recover before anything else.
INSTANCE = f"{os.getpid()}-{int.from_bytes(os.urandom(4), 'big'):08x}"


def write_beneath(dir_path, name, data):
    """Creates `name` in the sandbox without following a link: the sandbox
    is the container's to write, so a symlink there may point anywhere.
    Only top-level containers are taken (supports_nesting is false), whose
    sandbox path has nothing container-writable above it."""
    d = os.open(dir_path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fd = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o644,
            dir_fd=d,
        )
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    finally:
        os.close(d)


class Greeting(rpc.IsolatorServicer):
    def Handshake(self, request, context):
        if request.protocol_version != PROTOCOL_VERSION:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"greeting speaks protocol {PROTOCOL_VERSION}, not {request.protocol_version}",
            )
        return pb.HandshakeResponse(
            protocol_version=PROTOCOL_VERSION,
            supports_nesting=False,
            supports_standalone=True,
            instance_id=INSTANCE,
        )

    def Recover(self, request, context):
        # Nothing is kept per container: nothing to re-adopt or drop.
        return pb.RecoverResponse()

    def Prepare(self, request, context):
        write_beneath(request.sandbox_dir, "plugin.txt", b"written by the greeting plugin\n")
        info = model.LaunchInfo(env={"PLUGIN_GREETING": "hello"})
        return pb.PrepareResponse(launch_info=info)

    def Isolate(self, request, context):
        return pb.IsolateResponse()

    def Watch(self, request, context):
        # No limit to watch: ending the stream says none will come.
        return iter(())

    def Update(self, request, context):
        return pb.UpdateResponse()

    def Usage(self, request, context):
        return pb.UsageResponse()

    def Status(self, request, context):
        return pb.StatusResponse(fields={"greeting": "hello"})

    def Cleanup(self, request, context):
        # plugin.txt goes with the sandbox, which berth removes.
        return pb.CleanupResponse()


def main():
    socket = os.environ["BERTH_PLUGIN_SOCKET"]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    rpc.add_IsolatorServicer_to_server(Greeting(), server)
    server.add_insecure_port("unix:" + socket)
    server.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    server.stop(0)


if __name__ == "__main__":
    main()
