"""Kafka clients with SASL against a Strata broker that has authentication
on (issue #15). ALICE may create, write and read TOPIC (ACLs added with
`strata acl` before this runs) and read GROUP (an ACL this script adds
through the Kafka admin API, as the super user ADMIN).

Steps, each recorded in the printed JSON object:
- admin (PLAIN): CreateAcls / DescribeAcls / DeleteAcls;
- kafka-python as alice (SCRAM-SHA-256): produce COUNT records, then a
  group consumer reads them and commits;
- confluent-kafka as alice (SCRAM-SHA-512, idempotent): produce COUNT
  more; a group consumer resumes at the commit and reads exactly those;
- confluent-kafka as alice with KIP-848's consumer protocol, subscribed
  to the pattern `^TOPIC.*` while TOPIC-hidden (created and written by
  admin) matches too: alice is given only what she may describe;
- refusals: a wrong password (both clients), no SASL at all, producing to
  FORBIDDEN, consuming in another group.

Usage: sasl_clients.py BOOTSTRAP PROTOCOL CAFILE|- ADMIN_PW ALICE_PW TOPIC FORBIDDEN GROUP COUNT
"""
import json
import subprocess
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
)

(bootstrap, protocol, cafile, admin_pw, alice_pw, topic, forbidden, group, count) = sys.argv[1:10]
count = int(count)
cafile = None if cafile == "-" else cafile
out = {}




def kp(user, password, mechanism="SCRAM-SHA-256"):
    """kafka-python connection settings."""
    c = dict(
        bootstrap_servers=bootstrap,
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_plain_username=user,
        sasl_plain_password=password,
    )
    if cafile:
        c["ssl_cafile"] = cafile
        c["ssl_check_hostname"] = True
    return c


def ck(user, password, mechanism="SCRAM-SHA-512"):
    """confluent-kafka (librdkafka) connection settings."""
    c = {
        "bootstrap.servers": bootstrap,
        "security.protocol": protocol,
        "sasl.mechanism": mechanism,
        "sasl.username": user,
        "sasl.password": password,
    }
    if cafile:
        c["ssl.ca.location"] = cafile
    return c


def err(e):
    return type(e).__name__ + ": " + str(e)


# The super user grants alice her group through the Kafka admin API.
admin = KafkaAdminClient(**kp("admin", admin_pw, "PLAIN"))
group_acl = ACL(
    principal="User:alice",
    host="*",
    operation=ACLOperation.READ,
    permission_type=ACLPermissionType.ALLOW,
    resource_pattern=ResourcePattern(ResourceType.GROUP, group),
)
scratch_acl = ACL(
    principal="User:nobody",
    host="*",
    operation=ACLOperation.WRITE,
    permission_type=ACLPermissionType.DENY,
    resource_pattern=ResourcePattern(ResourceType.TOPIC, "scratch", ACLResourcePatternType.PREFIXED),
)
created = admin.create_acls([group_acl, scratch_acl])
out["create_acls_failed"] = [str(f) for f in created["failed"]]
described, error = admin.describe_acls(
    ACLFilter(
        principal="User:alice",
        host=None,
        operation=ACLOperation.ANY,
        permission_type=ACLPermissionType.ANY,
        resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY),
    )
)
out["alice_acls"] = sorted(
    "%s %s %s %s"
    % (a.resource_pattern.resource_type.name, a.resource_pattern.resource_name, a.operation.name, a.permission_type.name)
    for a in described
)
deleted = admin.delete_acls(
    [
        ACLFilter(
            principal="User:nobody",
            host=None,
            operation=ACLOperation.ANY,
            permission_type=ACLPermissionType.ANY,
            resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY),
        )
    ]
)
out["deleted_acls"] = sum(len(matches) for (_, matches, _) in deleted)
admin.close()

# kafka-python, SCRAM-SHA-256: produce, then consume in the group.
producer = KafkaProducer(acks="all", linger_ms=5, **kp("alice", alice_pw))
futures = [producer.send(topic, key=b"k", value=b"py-%d" % i) for i in range(count)]
producer.flush(timeout=60)
out["py_acked"] = [f.get(timeout=60).offset for f in futures]
try:
    producer.send(forbidden, value=b"must not land").get(timeout=20)
    out["forbidden_produce"] = "accepted"
except Exception as e:  # noqa: BLE001 - the class name is the result
    out["forbidden_produce"] = err(e)
producer.close()

consumer = KafkaConsumer(
    topic,
    group_id=group,
    auto_offset_reset="earliest",
    enable_auto_commit=False,
    consumer_timeout_ms=15000,
    **kp("alice", alice_pw),
)
values = []
for m in consumer:
    values.append(m.value.decode())
    if len(values) >= count:
        break
consumer.commit()
consumer.close()
out["py_consumed"] = values

# confluent-kafka, SCRAM-SHA-512, idempotent producer.
p = Producer({**ck("alice", alice_pw), "enable.idempotence": True, "acks": "all"})
offsets = []
for i in range(count):
    p.produce(topic, key=b"k", value=b"ck-%d" % i, on_delivery=lambda e, m: offsets.append(m.offset() if e is None else str(e)))
p.flush(60)
out["ck_acked"] = offsets

c = Consumer({**ck("alice", alice_pw), "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False})
c.subscribe([topic])
values = []
deadline = time.time() + 60
while len(values) < count and time.time() < deadline:
    m = c.poll(1.0)
    if m is None:
        continue
    if m.error():
        out.setdefault("ck_consume_errors", []).append(str(m.error()))
        continue
    values.append(m.value().decode())
c.commit(asynchronous=False)
c.close()
out["ck_consumed"] = values

# A pattern that also matches a topic alice may not describe: she is
# assigned only hers (without the filter she would be handed TOPIC-hidden
# and her fetches of it refused).
hidden = topic + "-hidden"
by_pattern = group + "-by-pattern"
ck_admin = AdminClient(ck("admin", admin_pw, "SCRAM-SHA-256"))
for f in ck_admin.create_topics([NewTopic(hidden, num_partitions=1)]).values():
    f.result(30)
p = Producer(ck("admin", admin_pw, "SCRAM-SHA-256"))
for i in range(5):
    p.produce(hidden, value=b"hidden-%d" % i)
p.flush(60)
c = Consumer(
    {
        **ck("alice", alice_pw),
        "group.id": by_pattern,
        "group.protocol": "consumer",
        "auto.offset.reset": "earliest",
    }
)
c.subscribe(["^" + topic + ".*"])
topics, errors, n = set(), [], 0
deadline = time.time() + 60
while n < 2 * count and time.time() < deadline:
    m = c.poll(1.0)
    if m is None:
        continue
    if m.error():
        errors.append(m.error().name())
        continue
    topics.add(m.topic())
    n += 1
# A little longer: nothing of the hidden topic comes, no error either.
end = time.time() + 3
while time.time() < end:
    m = c.poll(0.5)
    if m is not None:
        (errors.append(m.error().name()) if m.error() else topics.add(m.topic()))
# What the coordinator assigned her, as the super user sees it (the
# client alone could not tell: her metadata does not show the topic).
d = ck_admin.describe_consumer_groups([by_pattern])[by_pattern].result(timeout=30)
out["pattern_assigned"] = sorted({tp.topic for m in d.members for tp in m.assignment.topic_partitions})
c.close()
out["pattern_topics"] = sorted(topics)
out["pattern_records"] = n
out["pattern_errors"] = sorted(set(errors))

# A group alice may not read.
c = Consumer({**ck("alice", alice_pw), "group.id": "not-" + group, "auto.offset.reset": "earliest"})
c.subscribe([topic])
deadline = time.time() + 20
out["forbidden_group"] = None
while time.time() < deadline and out["forbidden_group"] is None:
    m = c.poll(1.0)
    if m is not None and m.error():
        out["forbidden_group"] = m.error().name()
    elif m is not None:
        out["forbidden_group"] = "consumed"
c.close()

# Wrong password: kafka-python (in a fresh process: its connection
# manager's backoff state is per process) and librdkafka.
probe = r"""
import logging, sys
from kafka import KafkaProducer
seen = []
class H(logging.Handler):
    def emit(self, record):
        seen.append(record.getMessage())
logging.getLogger("kafka").addHandler(H())
logging.getLogger("kafka").setLevel(logging.DEBUG)
try:
    KafkaProducer(max_block_ms=10000, request_timeout_ms=5000, **eval(sys.argv[1]))
    print("connected")
except Exception as e:
    print(type(e).__name__ + ": " + str(e))
print("\n".join(m for m in seen if "error_code=58" in m or "SaslAuthenticationFailed" in m))
"""
run = subprocess.run(
    [sys.executable, "-c", probe, repr(kp("alice", "wrong"))], capture_output=True, text=True, timeout=60
)
lines = run.stdout.splitlines()
out["py_wrong_password"] = lines[0] if lines else run.stderr
out["py_wrong_password_log"] = sorted(set(lines[1:]))
errors = []
a = AdminClient({**ck("alice", "wrong"), "error_cb": lambda e: errors.append(e.name())})
try:
    a.list_topics(timeout=10)
    out["ck_wrong_password"] = "listed"
except KafkaException as e:
    out["ck_wrong_password"] = str(e)
a.poll(1)
out["ck_wrong_password_errors"] = sorted(set(errors))

# No SASL at all: the broker closes the connection before serving it.
try:
    plain = KafkaProducer(
        bootstrap_servers=bootstrap,
        security_protocol=protocol.replace("SASL_", ""),
        ssl_cafile=cafile,
        max_block_ms=8000,
        request_timeout_ms=4000,
    )
    plain.send(topic, value=b"must not land").get(timeout=10)
    out["no_sasl"] = "accepted"
except Exception as e:  # noqa: BLE001
    out["no_sasl"] = err(e)

# The super user sees whether the forbidden topic was created.
admin = AdminClient(ck("admin", admin_pw, "SCRAM-SHA-256"))
out["admin_topics"] = sorted(admin.list_topics(timeout=20).topics.keys())

print(json.dumps(out))
