"""Ships log lines to a lake's Loki push endpoint the two ways real shippers do.

1. python-logging-loki (PyPI), a real Loki client library: the JSON push, basic auth
   with the node token as password, the level in a `severity` label.
2. Protobuf: a `logproto.PushRequest` encoded by Google's protobuf runtime from a
   descriptor that mirrors the messages of Loki's published `pkg/push/push.proto`
   (package `logproto`; field names, numbers and types as there), snappy-compressed as
   Promtail, Alloy and Docker's loki driver send it.

Usage: push.py <lake url> <node token> <run id>. Prints one JSON line: what was sent.
Exit 3 when a library is missing (`scripts/setup peers` installs them).
"""

import json
import logging
import sys
import time

try:
    import cramjam
    import logging_loki
    import requests
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from google.protobuf import timestamp_pb2  # noqa: F401  (registers google/protobuf/timestamp.proto)
except ImportError as e:
    print(f"missing Python package: {e}", file=sys.stderr)
    sys.exit(3)

url, token, run = sys.argv[1], sys.argv[2], sys.argv[3]
push_url = f"{url}/loki/api/v1/push"

# ---------------------------------------------------------------- 1. the client library
errors = []


class Strict(logging_loki.LokiHandler):
    def handleError(self, record):  # the library swallows failures by default
        errors.append(sys.exc_info()[1])


log = logging.getLogger(f"app-{run}")
log.setLevel(logging.DEBUG)
log.propagate = False
handler = Strict(url=push_url, tags={"job": "py-app", "run": run}, auth=("node-a", token), version="1")
log.addHandler(handler)
log.info("json line one")
log.warning("json line two")
log.error("json line three", extra={"tags": {"request_id": "r-42"}})
handler.emitter.close()
if errors:
    print(f"python-logging-loki failed: {errors!r}", file=sys.stderr)
    sys.exit(1)

# ---------------------------------------------------------------- 2. protobuf, push.proto's messages
f = descriptor_pb2.FileDescriptorProto(name="pkg/push/push.proto", package="logproto", syntax="proto3")
f.dependency.append("google/protobuf/timestamp.proto")
T = descriptor_pb2.FieldDescriptorProto


def message(name, *fields):
    m = f.message_type.add(name=name)
    for number, (fname, ftype, label, type_name) in enumerate(fields, start=1):
        fd = m.field.add(name=fname, number=number, type=ftype, label=label)
        if type_name:
            fd.type_name = type_name


OPT, REP = T.LABEL_OPTIONAL, T.LABEL_REPEATED
message("PushRequest", ("streams", T.TYPE_MESSAGE, REP, ".logproto.StreamAdapter"))
message(
    "StreamAdapter",
    ("labels", T.TYPE_STRING, OPT, None),
    ("entries", T.TYPE_MESSAGE, REP, ".logproto.EntryAdapter"),
    ("hash", T.TYPE_UINT64, OPT, None),
)
message(
    "EntryAdapter",
    ("timestamp", T.TYPE_MESSAGE, OPT, ".google.protobuf.Timestamp"),
    ("line", T.TYPE_STRING, OPT, None),
    ("structuredMetadata", T.TYPE_MESSAGE, REP, ".logproto.LabelPairAdapter"),
)
message("LabelPairAdapter", ("name", T.TYPE_STRING, OPT, None), ("value", T.TYPE_STRING, OPT, None))
pool = descriptor_pool.Default()
pool.Add(f)
PushRequest = message_factory.GetMessageClass(pool.FindMessageTypeByName("logproto.PushRequest"))

base_ns = time.time_ns() - 60_000_000_000  # a minute ago
req = PushRequest()
s = req.streams.add(labels=f'{{job="promtail", unit="nginx.service", level="error", run="{run}"}}')
for i, line in enumerate(["upstream timed out", 'quote " and \\ backslash', "é ünïcode ✓"]):
    e = s.entries.add(line=line)
    e.timestamp.seconds, e.timestamp.nanos = divmod(base_ns + i * 1_000, 1_000_000_000)
    if i == 0:
        e.structuredMetadata.add(name="trace_id", value="0af7651916cd43dd8448eb211c80319c")
s2 = req.streams.add(labels=f'{{job="docker", container_name="rag-api-1", run="{run}"}}')
e = s2.entries.add(line="from docker")
e.timestamp.seconds, e.timestamp.nanos = divmod(base_ns + 5_000, 1_000_000_000)
body = bytes(cramjam.snappy.compress_raw(req.SerializeToString()))
r = requests.post(
    push_url,
    data=body,
    headers={"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {token}"},
    timeout=30,
)
if r.status_code != 204:
    print(f"protobuf push answered {r.status_code}: {r.text}", file=sys.stderr)
    sys.exit(1)

# A careless push: the timestamp as a number. Refused, naming what is wrong.
bad = requests.post(
    push_url,
    json={"streams": [{"stream": {"job": "bad", "run": run}, "values": [[base_ns, "never stored"]]}]},
    headers={"Authorization": f"Bearer {token}"},
    timeout=30,
)
print(json.dumps({"base_ns": base_ns, "bad_status": bad.status_code, "bad_answer": bad.json()}))
