#!/usr/bin/env python3
"""berth's test isolator plugin (tests/tests/plugins.rs): misbehaves on
request and keeps per-container state in files, so the tests can see what
berth asked of it.

Usage: testplugin.py --state-dir DIR. What it does for a container depends
on the container's environment variable PLUGIN_TEST_MODE:
  limit    Watch reports a limitation (resource "widgets") at once;
  crash    Prepare kills the plugin process (os._exit);
  hang     Prepare never answers;
  garbage  Prepare answers bytes that are no PrepareResponse;
  badcleanup  the first Cleanup fails (the next succeeds).
Anything else: Prepare sets PLUGIN_TEST=yes. In DIR it keeps
`containers/<id>` while a container is prepared and not cleaned up,
appends each call to `calls.log` and each Recover (as JSON) to
`recover.log`, and each start's pid to `pids`.
"""

import json
import os
import sys
import threading
import time
from concurrent import futures

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "state", "proto"))

import grpc  # noqa: E402

pb, rpc = grpc.protos_and_services("berth/plugin/v1/isolator.proto")
model = grpc.protos("berth/v1/model.proto")

STATE = sys.argv[sys.argv.index("--state-dir") + 1]
CONTAINERS = os.path.join(STATE, "containers")
LOCK = threading.Lock()


def full_id(cid):
    parts = []
    while cid is not None and cid.value:
        parts.append(cid.value)
        cid = cid.parent if cid.HasField("parent") else None
    return "/".join(reversed(parts))


def log(name, line):
    with LOCK, open(os.path.join(STATE, name), "a") as f:
        f.write(line + "\n")


def state_file(cid):
    return os.path.join(CONTAINERS, full_id(cid).replace("/", "_"))


MODES = {}


class TestPlugin(rpc.IsolatorServicer):
    def Handshake(self, request, context):
        log("calls.log", "handshake")
        return pb.HandshakeResponse(
            protocol_version=1,
            supports_nesting=True,
            supports_standalone=True,
            instance_id=f"{os.getpid()}",
        )

    def Recover(self, request, context):
        known = sorted(full_id(r.id) for r in request.containers)
        orphans = sorted(full_id(o) for o in request.orphans)
        log("calls.log", "recover")
        log("recover.log", json.dumps({"containers": known, "orphans": orphans}))
        keep = {k.replace("/", "_") for k in known}
        for name in os.listdir(CONTAINERS):
            if name not in keep:
                os.unlink(os.path.join(CONTAINERS, name))
                log("calls.log", f"dropped {name}")
        return pb.RecoverResponse()

    def Prepare(self, request, context):
        cid = full_id(request.id)
        mode = request.config.env.get("PLUGIN_TEST_MODE", "")
        MODES[cid] = mode
        log("calls.log", f"prepare {cid} {mode}")
        open(state_file(request.id), "w").close()
        if mode == "crash":
            os._exit(3)
        if mode == "hang":
            time.sleep(3600)
        if mode == "garbage":
            # Field 1 (launch_info), length-delimited, with a length that
            # runs past the end: no protobuf decoder takes it.
            return b"\x0a\xff\xff\xff\x0f"
        info = model.LaunchInfo(env={"PLUGIN_TEST": "yes"})
        return pb.PrepareResponse(launch_info=info)

    def Isolate(self, request, context):
        log("calls.log", f"isolate {full_id(request.id)} {request.pid}")
        return pb.IsolateResponse()

    def Watch(self, request, context):
        cid = full_id(request.id)
        log("calls.log", f"watch {cid}")
        if MODES.get(cid) == "limit":
            yield pb.WatchEvent(
                limitation=pb.Limitation(resource="widgets", message="too many widgets")
            )
            return
        # Held open until berth goes away.
        while context.is_active():
            time.sleep(0.2)

    def Update(self, request, context):
        return pb.UpdateResponse()

    def Usage(self, request, context):
        return pb.UsageResponse()

    def Status(self, request, context):
        return pb.StatusResponse()

    def Cleanup(self, request, context):
        cid = full_id(request.id)
        log("calls.log", f"cleanup {cid}")
        failed = os.path.join(STATE, "cleanup-failed-" + cid.replace("/", "_"))
        if MODES.get(cid) == "badcleanup" and not os.path.exists(failed):
            open(failed, "w").close()
            context.abort(grpc.StatusCode.INTERNAL, "the widget is stuck")
        try:
            os.unlink(state_file(request.id))
        except FileNotFoundError:
            pass
        return pb.CleanupResponse()


def serializer(message):
    # The garbage mode hands raw bytes over.
    return message if isinstance(message, bytes) else message.SerializeToString()


def handlers(servicer):
    unary = {
        "Handshake": pb.HandshakeRequest,
        "Recover": pb.RecoverRequest,
        "Prepare": pb.PrepareRequest,
        "Isolate": pb.IsolateRequest,
        "Update": pb.UpdateRequest,
        "Usage": pb.UsageRequest,
        "Status": pb.StatusRequest,
        "Cleanup": pb.CleanupRequest,
    }
    h = {
        name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, name),
            request_deserializer=req.FromString,
            response_serializer=serializer,
        )
        for name, req in unary.items()
    }
    h["Watch"] = grpc.unary_stream_rpc_method_handler(
        servicer.Watch,
        request_deserializer=pb.WatchRequest.FromString,
        response_serializer=serializer,
    )
    return grpc.method_handlers_generic_handler("berth.plugin.v1.Isolator", h)


def main():
    os.makedirs(CONTAINERS, exist_ok=True)
    log("pids", str(os.getpid()))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((handlers(TestPlugin()),))
    server.add_insecure_port("unix:" + os.environ["BERTH_PLUGIN_SOCKET"])
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
