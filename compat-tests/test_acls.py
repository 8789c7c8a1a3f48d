"""ACLs (`authorizer = "acl"`) with real clients, against a broker of its own: a SASL_PLAINTEXT
listener with the users `admin` (a super user) and `alice`, and a PLAINTEXT one (its clients
are `User:ANONYMOUS`). Every test runs twice: against one broker (`[single]`) and against a
3-node cluster (`[cluster3]`, seccluster.py): every node with those listeners (and SASL_SSL,
which the brokers speak to each other as `User:broker`, the other super user), the same users
and authorizer settings, topics of replication factor 3 with min.insync.replicas 3. There
ACLs are made through a node that does not lead the topic, and each node's own Metadata must
show what they allow.

- CreateAcls / DescribeAcls / DeleteAcls v1-3 through confluent-kafka's admin client, stored
  in the metadata log; without CLUSTER ALTER they are refused.
- Produce needs Topic WRITE (TOPIC_AUTHORIZATION_FAILED otherwise), consuming needs Topic READ;
  DESCRIBE is implied by WRITE and READ; Metadata never shows a topic the principal may not
  describe; prefixed ACLs and deny rules behave as Kafka's (deny wins).
- Every denial is logged with principal, host, operation and resource.
"""

import time
import uuid

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType,
                                   AdminClient, NewTopic, ResourcePatternType, ResourceType)
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import TopicAuthorizationFailedError

from cluster import answered_by
from seccluster import KINDS, security_broker

USERS = {"admin": "admin-pw", "alice": "alice-pw"}


@pytest.fixture(scope="module", params=KINDS)
def acl_broker(request):
    args = []
    for u, p in USERS.items():
        args += ["--bootstrap-user", f"{u}:{p}"]
    admin = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256",
             "sasl.username": "admin", "sasl.password": USERS["admin"]}
    with security_broker(request, "ottla-acls", ["SASL_PLAINTEXT"], args,
                         {"OTTLA_AUTHORIZER": "acl", "OTTLA_SUPER_USERS": "User:admin"},
                         meta=("SASL_PLAINTEXT", admin)) as b:
        yield b


def conf(b, user):
    return {"bootstrap.servers": b.addr("SASL_PLAINTEXT"), "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": user, "sasl.password": USERS[user]}


def kp(b, user):
    return {"bootstrap_servers": b.addr("SASL_PLAINTEXT"), "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": user,
            "sasl_plain_password": USERS[user]}


def produce(config, topic, values):
    """Delivery errors per record (None: acknowledged)."""
    results = []
    p = Producer({**config, "message.timeout.ms": 5000, "retries": 0})
    for v in values:
        p.produce(topic, v, on_delivery=lambda err, msg: results.append(err))
    p.flush(20)
    return results


def read_all(b, user, topic, n):
    c = KafkaConsumer(**kp(b, user), consumer_timeout_ms=5000)
    c.assign([TopicPartition(topic, 0)])
    c.seek_to_beginning()
    got = []
    try:
        for m in c:
            got.append(m.value)
            if len(got) == n:
                break
    finally:
        c.close()
    return got


def binding(op, permission, name, pattern=ResourcePatternType.LITERAL, principal="User:alice",
            rt=ResourceType.TOPIC):
    return AclBinding(rt, name, pattern, principal, "*", op, permission)


def results(futures):
    return {k: f.result(30) for k, f in futures.items()}


def visible_at(b, user, addr, topic):
    """Whether Metadata from the node `addr` itself (answers by another node are asked
    again) lists `topic` to `user`."""
    for _ in range(20):
        md = AdminClient({**conf(b, user), "bootstrap.servers": addr}).list_topics(timeout=10)
        if answered_by(md).split("://")[-1] == addr:  # SASL: "sasl_plaintext://HOST:PORT"
            return topic in md.topics
    raise AssertionError(f"Metadata with bootstrap {addr} always answered by other nodes")


ALL = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                       AclPermissionType.ANY)


def everywhere(b, present=(), absent=(), timeout=10):
    """Waits until every node's DescribeAcls (asked of the node alone) lists the bindings
    `present` and none of `absent`: a change made through one node reaches the others through
    the metadata log."""
    want, gone = {str(x) for x in present}, {str(x) for x in absent}
    for addr in b.node_addrs("SASL_PLAINTEXT"):
        admin = AdminClient({**conf(b, "admin"), "bootstrap.servers": addr})
        deadline = time.monotonic() + timeout
        while True:
            have = {str(x) for x in admin.describe_acls(ALL).result(30)}
            if want <= have and not gone & have:
                break
            assert time.monotonic() < deadline, (addr, want - have, gone & have)
            time.sleep(0.1)


def create_acls(b, admin, bindings):
    results(admin.create_acls(bindings))
    everywhere(b, present=bindings)


def test_acls_decide_who_produces_and_consumes(acl_broker):
    b = acl_broker
    admin = AdminClient(conf(b, "admin"))
    ours, other = f"acl-{uuid.uuid4().hex[:6]}", f"other-{uuid.uuid4().hex[:6]}"
    rf = b.replication_factor
    results(admin.create_topics([NewTopic(ours, 1, rf), NewTopic(other, 1, rf)]))
    sent = [f"r{i}".encode() for i in range(20)]
    assert produce(conf(b, "admin"), ours, sent) == [None] * 20  # a super user may

    # No ACL: alice may neither write nor see the topics.
    errs = produce(conf(b, "alice"), ours, [b"x"])
    assert errs[0] is not None and "authoriz" in str(errs[0]).lower(), errs
    alice_admin = AdminClient(conf(b, "alice"))
    assert ours not in alice_admin.list_topics(timeout=10).topics
    with pytest.raises(KafkaException) as e:
        results(alice_admin.create_acls([binding(AclOperation.READ, AclPermissionType.ALLOW, ours)]))
    assert "authorization" in str(e.value).lower(), e.value

    # WRITE on the prefix "acl-", READ on our topic: writes there, not to the other topic.
    # Made through a node that does not lead `ours` (in the cluster), so the leader that
    # decides the produce and fetch below has them from the metadata log.
    via = AdminClient({**conf(b, "admin"), "bootstrap.servers": b.other_node_addr("SASL_PLAINTEXT", ours)})
    grants = [binding(AclOperation.WRITE, AclPermissionType.ALLOW, "acl-", ResourcePatternType.PREFIXED),
              binding(AclOperation.READ, AclPermissionType.ALLOW, ours)]
    create_acls(b, via, grants)
    # Every node's own Metadata: DESCRIBE is implied by WRITE / READ.
    for addr in b.node_addrs("SASL_PLAINTEXT"):
        deadline = time.monotonic() + 10
        while not visible_at(b, "alice", addr, ours) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert visible_at(b, "alice", addr, ours), addr
        assert not visible_at(b, "alice", addr, other), addr
    more = [f"alice-{i}".encode() for i in range(10)]
    assert produce(conf(b, "alice"), ours, more) == [None] * 10
    errs = produce(conf(b, "alice"), other, [b"x"])
    assert errs[0] is not None, "alice wrote to a topic without WRITE"
    assert read_all(b, "alice", ours, 30) == sent + more

    # Described as stored, by a filter.
    described = admin.describe_acls(AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY,
                                                      "User:alice", None, AclOperation.ANY,
                                                      AclPermissionType.ANY)).result(30)
    assert sorted(str(x) for x in described) == sorted(str(x) for x in grants)
    # MATCH finds the prefixed ACL that applies to our topic.
    matched = admin.describe_acls(AclBindingFilter(ResourceType.TOPIC, ours, ResourcePatternType.MATCH,
                                                   None, None, AclOperation.ANY,
                                                   AclPermissionType.ANY)).result(30)
    assert len(matched) == 2

    # A deny on the prefix wins over the literal allow.
    deny = binding(AclOperation.READ, AclPermissionType.DENY, "acl-", ResourcePatternType.PREFIXED)
    create_acls(b, via, [deny])
    with pytest.raises(TopicAuthorizationFailedError):
        read_all(b, "alice", ours, 1)

    # Deleted by filter: alice is back to nothing.
    deleted = results(admin.delete_acls([AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY,
                                                          "User:alice", None, AclOperation.ANY,
                                                          AclPermissionType.ANY)]))
    assert sum(len(v) for v in deleted.values()) == 3
    everywhere(b, absent=[*grants, deny])
    errs = produce(conf(b, "alice"), ours, [b"x"])
    assert errs[0] is not None

    log = b.run_log()
    assert "authorization denied" in log and "principal=User:alice" in log, log[-3000:]


def test_plaintext_clients_are_anonymous(acl_broker):
    b = acl_broker
    topic = f"anon-{uuid.uuid4().hex[:6]}"
    admin = AdminClient(conf(b, "admin"))
    results(admin.create_topics([NewTopic(topic, 1, b.replication_factor)]))
    errs = produce({"bootstrap.servers": b.bootstrap}, topic, [b"x"])
    assert errs[0] is not None
    # Denials are logged at most every 50 ms: the first test's may have used the slot.
    deadline = time.monotonic() + 10
    while "principal=User:ANONYMOUS" not in b.run_log() and time.monotonic() < deadline:
        time.sleep(0.2)
        produce({"bootstrap.servers": b.bootstrap}, topic, [b"x"])
    assert "principal=User:ANONYMOUS" in b.run_log()


def test_a_group_read_needs_group_read(acl_broker):
    from confluent_kafka import Consumer
    b = acl_broker
    admin = AdminClient(conf(b, "admin"))
    topic = f"acl-g-{uuid.uuid4().hex[:6]}"
    results(admin.create_topics([NewTopic(topic, 1, b.replication_factor)]))
    sent = [f"g{i}".encode() for i in range(10)]
    assert produce(conf(b, "admin"), topic, sent) == [None] * 10
    create_acls(b, admin, [binding(AclOperation.READ, AclPermissionType.ALLOW, topic)])

    def consume(group, want):
        c = Consumer({**conf(b, "alice"), "group.id": group, "auto.offset.reset": "earliest",
                      "enable.auto.commit": False})
        c.subscribe([topic])
        got, errors, deadline = [], [], time.monotonic() + 20
        while len(got) < want and time.monotonic() < deadline and not errors:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                errors.append(m.error())
            else:
                got.append(m.value())
        if got:
            c.commit(asynchronous=False)
        c.close()
        return got, errors

    got, errors = consume("g-denied", 1)
    assert not got and errors and "authorization" in str(errors[0]).lower(), (got, errors)
    create_acls(b, admin, [binding(AclOperation.READ, AclPermissionType.ALLOW, "g-alice",
                                       ResourcePatternType.PREFIXED, rt=ResourceType.GROUP)])
    got, errors = consume("g-alice-1", len(sent))
    assert got == sent and not errors


def test_a_transactional_producer_needs_transactional_id_write(acl_broker):
    b = acl_broker
    admin = AdminClient(conf(b, "admin"))
    topic, txn = f"acl-tx-{uuid.uuid4().hex[:6]}", f"tx-alice-{uuid.uuid4().hex[:6]}"
    results(admin.create_topics([NewTopic(topic, 1, b.replication_factor)]))
    create_acls(b, admin, [binding(AclOperation.WRITE, AclPermissionType.ALLOW, topic)])
    p = Producer({**conf(b, "alice"), "transactional.id": txn})
    with pytest.raises(KafkaException) as e:
        p.init_transactions(15)
    assert "authoriz" in str(e.value).lower(), e.value
    create_acls(b, admin, [binding(AclOperation.WRITE, AclPermissionType.ALLOW, txn,
                                       rt=ResourceType.TRANSACTIONAL_ID)])
    p = Producer({**conf(b, "alice"), "transactional.id": txn})
    p.init_transactions(15)
    p.begin_transaction()
    sent = [f"t{i}".encode() for i in range(10)]
    for v in sent:
        p.produce(topic, v)
    p.commit_transaction(15)
    c = KafkaConsumer(**kp(b, "admin"), consumer_timeout_ms=5000, isolation_level="read_committed")
    c.assign([TopicPartition(topic, 0)])
    c.seek_to_beginning()
    got = []
    for m in c:
        got.append(m.value)
        if len(got) == len(sent):
            break
    c.close()
    assert got == sent


def test_admin_apis_need_their_operations(acl_broker):
    """CreateTopics (CREATE), CreatePartitions (ALTER), DescribeConfigs / AlterConfigs
    (DESCRIBE_CONFIGS / ALTER_CONFIGS), DeleteTopics (DELETE), DescribeCluster's and
    describe_topics' authorized operations, ListGroups filtered, DescribeGroups and DeleteGroups
    refused: each first denied to alice, then allowed by its ACL, as Kafka decides."""
    from confluent_kafka import TopicCollection
    from confluent_kafka.admin import ConfigResource, NewPartitions
    b = acl_broker
    admin = AdminClient(conf(b, "admin"))
    alice = AdminClient(conf(b, "alice"))
    prefix = f"adm-{uuid.uuid4().hex[:6]}"
    topic = prefix + "-t"

    def error_of(future):
        try:
            future.result(30)
            return None
        except KafkaException as e:
            return e.args[0]

    # CreateTopics: no CREATE, then CREATE on the prefix.
    err = error_of(alice.create_topics([NewTopic(topic, 1, b.replication_factor)])[topic])
    assert err is not None and err.name() == "TOPIC_AUTHORIZATION_FAILED", err
    create_acls(b, admin, [binding(AclOperation.CREATE, AclPermissionType.ALLOW, prefix,
                                       ResourcePatternType.PREFIXED)])
    assert error_of(alice.create_topics([NewTopic(topic, 1, b.replication_factor)])[topic]) is None

    # CreatePartitions needs ALTER.
    err = error_of(alice.create_partitions([NewPartitions(topic, 2)])[topic])
    assert err is not None and err.name() == "TOPIC_AUTHORIZATION_FAILED", err
    create_acls(b, admin, [binding(AclOperation.ALTER, AclPermissionType.ALLOW, topic)])
    assert error_of(alice.create_partitions([NewPartitions(topic, 2)])[topic]) is None

    # DescribeConfigs and AlterConfigs on the topic; the broker's configs need the cluster.
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    # ALTER implies DESCRIBE but not DESCRIBE_CONFIGS.
    err = error_of(alice.describe_configs([res])[res])
    assert err is not None and err.name() == "TOPIC_AUTHORIZATION_FAILED", err
    create_acls(b, admin, [binding(AclOperation.ALTER_CONFIGS, AclPermissionType.ALLOW, topic)])
    described = alice.describe_configs([res])[res].result(30)  # ALTER_CONFIGS implies DESCRIBE_CONFIGS
    assert "retention.ms" in described
    broker_res = ConfigResource(ConfigResource.Type.BROKER, "1")
    err = error_of(alice.describe_configs([broker_res])[broker_res])
    assert err is not None and err.name() == "CLUSTER_AUTHORIZATION_FAILED", err
    assert admin.describe_configs([broker_res])[broker_res].result(30)  # a super user may
    alter = ConfigResource(ConfigResource.Type.TOPIC, topic, set_config={"retention.ms": "123456"})
    assert error_of(alice.alter_configs([alter])[alter]) is None
    assert admin.describe_configs([res])[res].result(30)["retention.ms"].value == "123456"

    # Authorized operations: alice's own on the topic and the cluster.
    d = alice.describe_topics(TopicCollection([topic]),
                              include_authorized_operations=True).values()
    ops = {o.name for o in list(d)[0].result(30).authorized_operations}
    assert {"CREATE", "ALTER", "DESCRIBE", "ALTER_CONFIGS", "DESCRIBE_CONFIGS"} <= ops, ops
    assert not ops & {"READ", "WRITE", "DELETE"}, ops
    cluster = alice.describe_cluster(include_authorized_operations=True).result(30)
    assert not cluster.authorized_operations, cluster.authorized_operations
    admin_cluster = admin.describe_cluster(include_authorized_operations=True).result(30)
    assert "ALTER" in {o.name for o in admin_cluster.authorized_operations}

    # DeleteTopics needs DELETE.
    err = error_of(alice.delete_topics([topic])[topic])
    assert err is not None and err.name() == "TOPIC_AUTHORIZATION_FAILED", err

    # Groups: alice's group is listed to her only with DESCRIBE; describe and delete refused.
    group = prefix + "-g"
    from confluent_kafka import Consumer
    create_acls(b, admin, [binding(AclOperation.READ, AclPermissionType.ALLOW, topic),
                               binding(AclOperation.READ, AclPermissionType.ALLOW, group,
                                       rt=ResourceType.GROUP)])
    c = Consumer({**conf(b, "alice"), "group.id": group, "enable.auto.commit": False})
    c.subscribe([topic])
    deadline = time.monotonic() + 20
    while not c.assignment() and time.monotonic() < deadline:
        c.poll(0.2)
    c.close()
    listed = {g.group_id for g in admin.list_consumer_groups().result(30).valid}
    assert group in listed
    # READ implies DESCRIBE on the group.
    assert group in {g.group_id for g in alice.list_consumer_groups().result(30).valid}
    other = AdminClient({**conf(b, "alice")})
    create_acls(b, admin, [binding(AclOperation.DESCRIBE, AclPermissionType.DENY, group,
                                       rt=ResourceType.GROUP)])
    assert group not in {g.group_id for g in other.list_consumer_groups().result(30).valid}
    err = error_of(other.describe_consumer_groups([group])[group])
    assert err is not None and err.name() == "GROUP_AUTHORIZATION_FAILED", err
    err = error_of(other.delete_consumer_groups([group])[group])
    assert err is not None and err.name() == "GROUP_AUTHORIZATION_FAILED", err
    assert error_of(admin.delete_consumer_groups([group])[group]) is None

    create_acls(b, admin, [binding(AclOperation.DELETE, AclPermissionType.ALLOW, topic)])
    assert error_of(alice.delete_topics([topic])[topic]) is None
