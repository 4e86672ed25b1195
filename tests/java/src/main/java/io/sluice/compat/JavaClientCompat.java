package io.sluice.compat;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.ConsumerGroupListing;
import org.apache.kafka.clients.admin.DeletedRecords;
import org.apache.kafka.clients.admin.ListOffsetsResult.ListOffsetsResultInfo;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.GroupIdNotFoundException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.apache.kafka.common.errors.UnsupportedVersionException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.utils.internals.AppInfoParser;

/**
 * The Java client (kafka-clients) against Sluice, in one JVM run: the idempotent producer with every
 * codec and an exact read-back, classic consumer groups (two members sharing a multi-partition topic,
 * committed offsets respected on rejoin), the KIP-848 consumer protocol (not implemented by Sluice:
 * the clear failure the client reports is asserted, so this check flips when support lands), and the
 * AdminClient (topics, configs, partitions, offsets, groups, records deletion).
 *
 * <p>Usage: JavaClientCompat BOOTSTRAP. Exits 0 when every check passed, 1 at the first failure.
 */
public final class JavaClientCompat {
    private static final long TIMEOUT_S = 30;
    private static final Duration POLL = Duration.ofMillis(200);
    private static final List<String> CODECS = List.of("none", "gzip", "snappy", "lz4", "zstd");

    private final String bootstrap;
    private final Admin admin;

    private JavaClientCompat(String bootstrap) {
        this.bootstrap = bootstrap;
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, 15_000);
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30_000);
        this.admin = Admin.create(props);
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: JavaClientCompat BOOTSTRAP");
            System.exit(2);
        }
        System.out.println("java: kafka-clients " + AppInfoParser.getVersion());
        JavaClientCompat compat = new JavaClientCompat(args[0]);
        String step = "";
        try {
            step = "idempotent producer, every codec";
            compat.producerEveryCodec();
            step = "classic consumer group";
            compat.classicConsumerGroup();
            step = "group.protocol=consumer (KIP-848)";
            compat.consumerProtocolUnsupported();
            step = "admin: topics, configs, partitions";
            compat.adminTopicsConfigsPartitions();
            step = "admin: list offsets, delete records";
            compat.adminOffsetsAndDeleteRecords();
            step = "admin: consumer groups";
            compat.adminConsumerGroups();
        } catch (Throwable e) {
            System.err.println("java: FAIL in " + step + ": " + e);
            e.printStackTrace();
            System.exit(1);
        } finally {
            compat.admin.close(Duration.ofSeconds(5));
        }
        System.out.println("java: OK (idempotent producer x " + CODECS + ", classic groups, KIP-848"
                + " refused as expected, admin topics/configs/partitions/offsets/groups/delete records)");
        // Non-daemon client threads must not keep the JVM alive.
        System.exit(0);
    }

    // ---- helpers -------------------------------------------------------------------------------

    static void check(boolean condition, String message) {
        if (!condition) {
            throw new AssertionError(message);
        }
    }

    static <T> T get(Future<T> future) throws Exception {
        return future.get(TIMEOUT_S, TimeUnit.SECONDS);
    }

    static String str(byte[] bytes) {
        return bytes == null ? null : new String(bytes, StandardCharsets.UTF_8);
    }

    static byte[] bytes(String s) {
        return s == null ? null : s.getBytes(StandardCharsets.UTF_8);
    }

    KafkaProducer<byte[], byte[]> producer(String codec) {
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec);
        props.put(ProducerConfig.LINGER_MS_CONFIG, 10);
        props.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 60_000);
        props.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, 15_000);
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        return new KafkaProducer<>(props);
    }

    KafkaConsumer<byte[], byte[]> consumer(String groupId, String protocol) {
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        if (groupId != null) {
            props.put(ConsumerConfig.GROUP_ID_CONFIG, groupId);
            props.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, protocol);
        }
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 50);
        props.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, 15_000);
        props.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30_000);
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        return new KafkaConsumer<>(props);
    }

    void createTopic(String topic, int partitions, Map<String, String> configs) throws Exception {
        NewTopic newTopic = new NewTopic(topic, partitions, (short) 1).configs(configs);
        get(admin.createTopics(List.of(newTopic)).all());
        TopicDescription description = get(admin.describeTopics(List.of(topic)).topicNameValues().get(topic));
        check(description.partitions().size() == partitions,
                topic + ": created with " + partitions + " partitions, described with "
                        + description.partitions().size());
    }

    /** A record the test expects to read back exactly. */
    record Expected(int partition, long offset, String key, String value, String header) {}

    /** Reads partitions [0, partitions) of topic from offset 0 until `count` records arrived. */
    List<ConsumerRecord<byte[], byte[]>> readAll(String topic, int partitions, int count) {
        List<ConsumerRecord<byte[], byte[]>> got = new ArrayList<>();
        try (KafkaConsumer<byte[], byte[]> consumer = consumer(null, null)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int p = 0; p < partitions; p++) {
                tps.add(new TopicPartition(topic, p));
            }
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_S);
            while (got.size() < count && System.nanoTime() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(POLL)) {
                    got.add(r);
                }
            }
            // One more poll: nothing beyond the expected records may arrive.
            consumer.poll(Duration.ofMillis(500)).forEach(got::add);
        }
        return got;
    }

    // ---- 1. idempotent producer, every codec -----------------------------------------------------

    void producerEveryCodec() throws Exception {
        String topic = "compat-java-codecs";
        int partitions = 3;
        int perCodec = 300;
        createTopic(topic, partitions, Map.of());
        List<Expected> expected = new ArrayList<>();
        Map<Integer, Long> nextOffset = new HashMap<>();
        for (String codec : CODECS) {
            List<Future<RecordMetadata>> acks = new ArrayList<>();
            List<ProducerRecord<byte[], byte[]>> sent = new ArrayList<>();
            try (KafkaProducer<byte[], byte[]> producer = producer(codec)) {
                for (int i = 0; i < perCodec; i++) {
                    // Compressible values of varied length; every 50th record has a null key, every
                    // 75th a null value (a tombstone), to check both survive every codec.
                    String key = i % 50 == 7 ? null : codec + "-key-" + i;
                    String value = i % 75 == 11 ? null
                            : codec + "-value-" + i + "-" + "abcdefgh".repeat(1 + (i % 40));
                    ProducerRecord<byte[], byte[]> record =
                            new ProducerRecord<>(topic, i % partitions, bytes(key), bytes(value));
                    record.headers().add("codec", bytes(codec)).add("i", bytes(Integer.toString(i)));
                    sent.add(record);
                    acks.add(producer.send(record));
                }
                producer.flush();
            }
            for (int i = 0; i < perCodec; i++) {
                RecordMetadata meta = get(acks.get(i));
                ProducerRecord<byte[], byte[]> record = sent.get(i);
                long want = nextOffset.getOrDefault(record.partition(), 0L);
                check(meta.partition() == record.partition() && meta.offset() == want,
                        codec + " record " + i + ": acknowledged at " + meta.partition() + "@"
                                + meta.offset() + ", expected " + record.partition() + "@" + want
                                + " (offsets are dense per partition)");
                nextOffset.put(record.partition(), want + 1);
                expected.add(new Expected(meta.partition(), meta.offset(), str(record.key()),
                        str(record.value()), codec + "/" + i));
            }
            System.out.println("java: produced " + perCodec + " records with compression.type=" + codec);
        }

        List<ConsumerRecord<byte[], byte[]>> got = readAll(topic, partitions, expected.size());
        check(got.size() == expected.size(),
                "read back " + got.size() + " records, expected " + expected.size());
        Map<String, Expected> byPosition = new HashMap<>();
        for (Expected e : expected) {
            byPosition.put(e.partition() + "@" + e.offset(), e);
        }
        Set<String> seen = new HashSet<>();
        for (ConsumerRecord<byte[], byte[]> r : got) {
            String position = r.partition() + "@" + r.offset();
            Expected e = byPosition.get(position);
            check(e != null, "unexpected record at " + position);
            check(seen.add(position), "record at " + position + " read twice");
            Header codec = r.headers().lastHeader("codec");
            Header index = r.headers().lastHeader("i");
            String header = (codec == null || index == null) ? null
                    : str(codec.value()) + "/" + str(index.value());
            check(java.util.Objects.equals(e.key(), str(r.key()))
                            && java.util.Objects.equals(e.value(), str(r.value()))
                            && e.header().equals(header),
                    "record at " + position + ": got key=" + str(r.key()) + " value=" + str(r.value())
                            + " headers=" + header + ", expected " + e);
        }
        System.out.println("java: read back all " + expected.size() + " records with exact keys,"
                + " values, headers and offsets");
    }

    // ---- 2. classic consumer group ---------------------------------------------------------------

    /** One member of a consumer group with what it consumed and processed. */
    static final class Member {
        final String name;
        final KafkaConsumer<byte[], byte[]> consumer;
        final Map<TopicPartition, Long> processedUpTo = new HashMap<>();

        Member(String name, KafkaConsumer<byte[], byte[]> consumer) {
            this.name = name;
            this.consumer = consumer;
        }
    }

    void classicConsumerGroup() throws Exception {
        String topic = "compat-java-group";
        String group = "compat-java-classic";
        int partitions = 4;
        int total = 400;
        createTopic(topic, partitions, Map.of());

        Member a = new Member("a", consumer(group, "classic"));
        Member b = new Member("b", consumer(group, "classic"));
        a.consumer.subscribe(List.of(topic));
        // A alone owns every partition.
        pollUntil(List.of(a), () -> a.consumer.assignment().size() == partitions, "a owns all partitions");
        // B joins: the two members share the partitions, disjointly.
        b.consumer.subscribe(List.of(topic));
        pollUntil(List.of(a, b), () -> {
            Set<TopicPartition> ta = a.consumer.assignment();
            Set<TopicPartition> tb = b.consumer.assignment();
            Set<TopicPartition> union = new HashSet<>(ta);
            union.addAll(tb);
            return !ta.isEmpty() && !tb.isEmpty() && union.size() == partitions
                    && ta.size() + tb.size() == partitions;
        }, "a and b share the partitions");
        System.out.println("java: group " + group + ": a owns " + a.consumer.assignment() + ", b owns "
                + b.consumer.assignment());

        // Produce once the group is stable, so that no record is read before the rebalance.
        try (KafkaProducer<byte[], byte[]> producer = producer("lz4")) {
            List<Future<RecordMetadata>> acks = new ArrayList<>();
            for (int i = 0; i < total; i++) {
                acks.add(producer.send(new ProducerRecord<>(topic, i % partitions, bytes("k" + i),
                        bytes("v" + i))));
            }
            for (Future<RecordMetadata> ack : acks) {
                get(ack);
            }
        }

        // Both consume until about half of the records are processed; each commits what it processed.
        Map<TopicPartition, Set<Long>> consumed = new HashMap<>();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_S);
        int count = 0;
        Map<String, Set<TopicPartition>> ownedBy = Map.of("a", a.consumer.assignment(), "b",
                b.consumer.assignment());
        while (count < total / 2 && System.nanoTime() < deadline) {
            for (Member m : List.of(a, b)) {
                for (ConsumerRecord<byte[], byte[]> r : m.consumer.poll(POLL)) {
                    TopicPartition tp = new TopicPartition(r.topic(), r.partition());
                    check(ownedBy.get(m.name).contains(tp),
                            m.name + " got a record of " + tp + " which it does not own");
                    check(consumed.computeIfAbsent(tp, k -> new HashSet<>()).add(r.offset()),
                            "record " + tp + "@" + r.offset() + " consumed twice");
                    m.processedUpTo.put(tp, r.offset() + 1);
                    count++;
                }
            }
        }
        check(count >= total / 2, "group consumed only " + count + " records in " + TIMEOUT_S + " s");
        check(!a.processedUpTo.isEmpty() && !b.processedUpTo.isEmpty(),
                "both members must have consumed: a " + a.processedUpTo + ", b " + b.processedUpTo);
        Map<TopicPartition, OffsetAndMetadata> committed = new HashMap<>();
        for (Member m : List.of(a, b)) {
            Map<TopicPartition, OffsetAndMetadata> offsets = m.processedUpTo.entrySet().stream()
                    .collect(Collectors.toMap(Map.Entry::getKey,
                            e -> new OffsetAndMetadata(e.getValue(), "by " + m.name)));
            m.consumer.commitSync(offsets);
            committed.putAll(offsets);
        }
        a.consumer.close(Duration.ofSeconds(10));
        b.consumer.close(Duration.ofSeconds(10));
        System.out.println("java: a and b consumed " + count + " records and committed " + committed);

        // A new member of the group resumes at the committed offsets, not from the beginning.
        Member c = new Member("c", consumer(group, "classic"));
        try {
            Set<TopicPartition> all = new HashSet<>();
            for (int p = 0; p < partitions; p++) {
                all.add(new TopicPartition(topic, p));
            }
            Map<TopicPartition, OffsetAndMetadata> fetched = c.consumer.committed(all, Duration.ofSeconds(TIMEOUT_S));
            for (Map.Entry<TopicPartition, OffsetAndMetadata> e : committed.entrySet()) {
                OffsetAndMetadata f = fetched.get(e.getKey());
                check(f != null && f.offset() == e.getValue().offset()
                                && f.metadata().equals(e.getValue().metadata()),
                        "committed offset of " + e.getKey() + ": fetched " + f + ", committed " + e.getValue());
            }
            c.consumer.subscribe(List.of(topic));
            Map<TopicPartition, Long> firstSeen = new HashMap<>();
            deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_S);
            while (count < total && System.nanoTime() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : c.consumer.poll(POLL)) {
                    TopicPartition tp = new TopicPartition(r.topic(), r.partition());
                    firstSeen.putIfAbsent(tp, r.offset());
                    check(consumed.computeIfAbsent(tp, k -> new HashSet<>()).add(r.offset()),
                            "record " + tp + "@" + r.offset() + " consumed again after rejoin"
                                    + " (committed: " + committed.get(tp) + ")");
                    count++;
                }
            }
            check(count == total, "consumed " + count + " of " + total + " records in total");
            for (Map.Entry<TopicPartition, Long> e : firstSeen.entrySet()) {
                OffsetAndMetadata commit = committed.get(e.getKey());
                long want = commit == null ? 0 : commit.offset();
                check(e.getValue() == want, "after rejoin " + e.getKey() + " started at " + e.getValue()
                        + ", committed offset " + want);
            }
            for (Set<Long> offsets : consumed.values()) {
                check(offsets.size() == total / partitions, "per-partition offsets: " + offsets.size());
            }
            c.consumer.commitSync();
        } finally {
            c.consumer.close(Duration.ofSeconds(10));
        }
        System.out.println("java: rejoined member c resumed at the committed offsets; all " + total
                + " records consumed exactly once");
    }

    void pollUntil(List<Member> members, java.util.function.BooleanSupplier done, String what) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_S);
        while (!done.getAsBoolean()) {
            check(System.nanoTime() < deadline, "timed out waiting until " + what);
            for (Member m : members) {
                ConsumerRecords<byte[], byte[]> records = m.consumer.poll(Duration.ofMillis(100));
                check(records.isEmpty(), m.name + " got records while the group formed");
            }
        }
    }

    // ---- 3. KIP-848 ------------------------------------------------------------------------------

    void consumerProtocolUnsupported() throws Exception {
        String topic = "compat-java-group";
        // Sluice does not implement ConsumerGroupHeartbeat (KIP-848) yet. The client must report it as
        // UnsupportedVersionException from poll (not hang, not a generic timeout). When support lands,
        // this check fails and should become a real test of the protocol.
        KafkaConsumer<byte[], byte[]> consumer = consumer("compat-java-kip848", "consumer");
        Throwable error = null;
        try {
            consumer.subscribe(List.of(topic));
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_S);
            while (System.nanoTime() < deadline) {
                consumer.poll(POLL);
            }
        } catch (KafkaException e) {
            error = e;
        } finally {
            consumer.close(Duration.ofSeconds(5));
        }
        check(error instanceof UnsupportedVersionException,
                "group.protocol=consumer: expected UnsupportedVersionException from poll within "
                        + TIMEOUT_S + " s, got " + error);
        System.out.println("java: group.protocol=consumer refused as expected: " + error.getMessage());
    }

    // ---- 4. admin --------------------------------------------------------------------------------

    String topicConfig(String topic, String name) throws Exception {
        ConfigResource resource = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        Config config = get(admin.describeConfigs(List.of(resource)).values().get(resource));
        ConfigEntry entry = config.get(name);
        check(entry != null, topic + ": describeConfigs has no " + name);
        return entry.value();
    }

    void adminTopicsConfigsPartitions() throws Exception {
        String topic = "compat-java-admin";
        createTopic(topic, 2, Map.of("retention.ms", "3600000"));
        check(get(admin.listTopics().names()).contains(topic), "listTopics lacks " + topic);

        // describeConfigs shows the value given at creation; its source is the topic's own config.
        ConfigResource resource = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        Config config = get(admin.describeConfigs(List.of(resource)).values().get(resource));
        ConfigEntry retention = config.get("retention.ms");
        check(retention != null && "3600000".equals(retention.value())
                        && retention.source() == ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG,
                "retention.ms after create: " + retention);

        // incrementalAlterConfigs: SET one key, then DELETE it (back to the default).
        get(admin.incrementalAlterConfigs(Map.of(resource, List.of(
                new AlterConfigOp(new ConfigEntry("retention.ms", "7200000"), AlterConfigOp.OpType.SET),
                new AlterConfigOp(new ConfigEntry("max.message.bytes", "2097152"), AlterConfigOp.OpType.SET))))
                .all());
        check("7200000".equals(topicConfig(topic, "retention.ms")), "retention.ms after SET: "
                + topicConfig(topic, "retention.ms"));
        check("2097152".equals(topicConfig(topic, "max.message.bytes")), "max.message.bytes after SET: "
                + topicConfig(topic, "max.message.bytes"));
        get(admin.incrementalAlterConfigs(Map.of(resource, List.of(
                new AlterConfigOp(new ConfigEntry("retention.ms", ""), AlterConfigOp.OpType.DELETE))))
                .all());
        config = get(admin.describeConfigs(List.of(resource)).values().get(resource));
        retention = config.get("retention.ms");
        check(retention != null && retention.source() != ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG
                        && !"7200000".equals(retention.value()),
                "retention.ms after DELETE must be back to the default: " + retention);
        check("2097152".equals(topicConfig(topic, "max.message.bytes")),
                "max.message.bytes must survive deleting another key");

        // A config Sluice refuses is refused with a clear error, and nothing changes.
        try {
            get(admin.incrementalAlterConfigs(Map.of(resource, List.of(new AlterConfigOp(
                    new ConfigEntry("cleanup.policy", "compact"), AlterConfigOp.OpType.SET)))).all());
            throw new AssertionError("cleanup.policy=compact must be refused");
        } catch (ExecutionException e) {
            check(e.getCause() instanceof org.apache.kafka.common.errors.InvalidConfigurationException
                            || e.getCause() instanceof org.apache.kafka.common.errors.InvalidRequestException,
                    "cleanup.policy=compact: " + e.getCause());
        }

        // createPartitions: 2 -> 4.
        get(admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(4))).all());
        TopicDescription description = get(admin.describeTopics(List.of(topic)).topicNameValues().get(topic));
        check(description.partitions().size() == 4, "partitions after createPartitions: "
                + description.partitions().size());
        // A new partition takes records.
        try (KafkaProducer<byte[], byte[]> producer = producer("none")) {
            RecordMetadata meta = get(producer.send(new ProducerRecord<>(topic, 3, bytes("k"), bytes("v"))));
            check(meta.partition() == 3 && meta.offset() == 0, "produce to new partition: " + meta);
        }

        // deleteTopics.
        get(admin.deleteTopics(List.of(topic)).all());
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_S);
        while (get(admin.listTopics().names()).contains(topic)) {
            check(System.nanoTime() < deadline, "deleted topic still listed");
            Thread.sleep(100);
        }
        try {
            get(admin.describeTopics(List.of(topic)).topicNameValues().get(topic));
            throw new AssertionError("describeTopics of a deleted topic must fail");
        } catch (ExecutionException e) {
            check(e.getCause() instanceof UnknownTopicOrPartitionException,
                    "describe deleted topic: " + e.getCause());
        }
        System.out.println("java: admin create/describe/configs/createPartitions/delete OK");
    }

    long offsetOf(TopicPartition tp, OffsetSpec spec) throws Exception {
        ListOffsetsResultInfo info = get(admin.listOffsets(Map.of(tp, spec)).partitionResult(tp));
        return info.offset();
    }

    void adminOffsetsAndDeleteRecords() throws Exception {
        String topic = "compat-java-offsets";
        createTopic(topic, 1, Map.of());
        TopicPartition tp = new TopicPartition(topic, 0);
        long baseTs = System.currentTimeMillis() - 600_000;
        try (KafkaProducer<byte[], byte[]> producer = producer("gzip")) {
            List<Future<RecordMetadata>> acks = new ArrayList<>();
            // Record i has timestamp baseTs + 10 i, except record 50, which carries the largest
            // timestamp (baseTs + 5000) from the middle of its batch.
            for (int i = 0; i < 100; i++) {
                long ts = i == 50 ? baseTs + 5_000 : baseTs + 10L * i;
                acks.add(producer.send(new ProducerRecord<>(topic, 0, ts, bytes("k" + i), bytes("v" + i))));
            }
            for (int i = 0; i < 100; i++) {
                check(get(acks.get(i)).offset() == i, "offset of record " + i);
            }
        }
        check(offsetOf(tp, OffsetSpec.earliest()) == 0, "earliest before deleteRecords");
        check(offsetOf(tp, OffsetSpec.latest()) == 100, "latest");
        check(offsetOf(tp, OffsetSpec.forTimestamp(baseTs + 255)) == 26, "offset for timestamp +255 ms: "
                + offsetOf(tp, OffsetSpec.forTimestamp(baseTs + 255)));
        check(offsetOf(tp, OffsetSpec.forTimestamp(baseTs + 250)) == 25, "offset for timestamp +250 ms");
        check(offsetOf(tp, OffsetSpec.forTimestamp(baseTs + 1_000)) == 50, "offset for timestamp +1000 ms");
        check(offsetOf(tp, OffsetSpec.forTimestamp(baseTs + 100_000)) == -1,
                "offset for a timestamp after every record must be -1");
        // MAX_TIMESTAMP: the exact record with the largest timestamp (as Kafka answers), not the
        // last offset of its batch.
        ListOffsetsResultInfo max = get(admin.listOffsets(Map.of(tp, OffsetSpec.maxTimestamp())).partitionResult(tp));
        check(max.offset() == 50 && max.timestamp() == baseTs + 5_000, "max timestamp: " + max);

        DeletedRecords deleted = get(admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(40)))
                .lowWatermarks().get(tp));
        check(deleted.lowWatermark() == 40, "deleteRecords low watermark: " + deleted.lowWatermark());
        check(offsetOf(tp, OffsetSpec.earliest()) == 40, "earliest after deleteRecords: "
                + offsetOf(tp, OffsetSpec.earliest()));
        check(offsetOf(tp, OffsetSpec.latest()) == 100, "latest after deleteRecords");
        // A reader from the beginning starts at the new earliest offset.
        List<ConsumerRecord<byte[], byte[]>> got = readAll(topic, 1, 60);
        check(got.size() == 60 && got.get(0).offset() == 40 && "k40".equals(str(got.get(0).key())),
                "read after deleteRecords: " + got.size() + " records, first at "
                        + (got.isEmpty() ? "-" : got.get(0).offset()));
        System.out.println("java: admin listOffsets (earliest/latest/timestamp/max) and deleteRecords OK");
    }

    @SuppressWarnings("deprecation")
    void adminConsumerGroups() throws Exception {
        String group = "compat-java-classic";
        String topic = "compat-java-group";
        Collection<ConsumerGroupListing> listings = get(admin.listConsumerGroups().all());
        Set<String> ids = listings.stream().map(ConsumerGroupListing::groupId).collect(Collectors.toSet());
        check(ids.contains(group), "listConsumerGroups lacks " + group + ": " + ids);

        ConsumerGroupDescription description = get(admin.describeConsumerGroups(List.of(group)).describedGroups()
                .get(group));
        check(description.groupState() == GroupState.EMPTY && description.members().isEmpty(),
                "describeConsumerGroups: state " + description.groupState() + ", members "
                        + description.members());

        Map<TopicPartition, OffsetAndMetadata> offsets =
                get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
        check(offsets.size() == 4, "listConsumerGroupOffsets: " + offsets);
        for (Map.Entry<TopicPartition, OffsetAndMetadata> e : offsets.entrySet()) {
            check(e.getValue().offset() == 100, "committed offset of " + e.getKey() + ": " + e.getValue());
        }

        // alterConsumerGroupOffsets, then list again.
        TopicPartition p0 = new TopicPartition(topic, 0);
        TopicPartition p1 = new TopicPartition(topic, 1);
        get(admin.alterConsumerGroupOffsets(group, Map.of(p0, new OffsetAndMetadata(10),
                p1, new OffsetAndMetadata(20, "altered"))).all());
        offsets = get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
        check(offsets.get(p0).offset() == 10 && offsets.get(p1).offset() == 20
                        && "altered".equals(offsets.get(p1).metadata())
                        && offsets.get(new TopicPartition(topic, 2)).offset() == 100,
                "offsets after alterConsumerGroupOffsets: " + new TreeMap<>(offsets.entrySet().stream()
                        .collect(Collectors.toMap(e -> e.getKey().toString(), Map.Entry::getValue))));

        // deleteConsumerGroups: the group is gone.
        get(admin.deleteConsumerGroups(List.of(group)).all());
        ids = get(admin.listConsumerGroups().all()).stream().map(ConsumerGroupListing::groupId)
                .collect(Collectors.toSet());
        check(!ids.contains(group), "deleted group still listed: " + ids);
        offsets = get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
        check(offsets.isEmpty(), "offsets of a deleted group: " + offsets);
        try {
            get(admin.deleteConsumerGroups(List.of(group)).all());
            throw new AssertionError("deleting a deleted group must fail");
        } catch (ExecutionException e) {
            check(e.getCause() instanceof GroupIdNotFoundException, "delete deleted group: " + e.getCause());
        }
        System.out.println("java: admin listConsumerGroups/describe/listOffsets/alterOffsets/delete OK");
    }
}
