package io.sluice.compat;

import java.time.Duration;
import java.util.*;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.TopicPartition;

/** Kafka's Java client (4.4.0) against topics with a compression.type codec: a Java producer sends
 * uncompressed and gzip batches, the broker recompresses them, and a Java consumer with
 * check.crcs=true reads every record back intact, in order. Run by tests/tests/topic_compression.rs;
 * argument: the bootstrap address. Exits non-zero on any mismatch. */
public class TopicCodecCompat {
    public static void main(String[] a) throws Exception {
        String boot = a[0];
        Properties p = new Properties();
        p.put("bootstrap.servers", boot);
        try (Admin admin = Admin.create(p)) {
            List<NewTopic> topics = new ArrayList<>();
            for (String c : new String[]{"lz4", "snappy", "gzip", "zstd", "uncompressed"})
                topics.add(new NewTopic("jc-" + c, 1, (short) 1).configs(Map.of("compression.type", c)));
            admin.createTopics(topics).all().get();
        }
        Properties pp = new Properties();
        pp.putAll(p);
        pp.put("key.serializer", "org.apache.kafka.common.serialization.StringSerializer");
        pp.put("value.serializer", "org.apache.kafka.common.serialization.StringSerializer");
        pp.put("linger.ms", "20");
        pp.put("batch.size", "1000000");
        int n = 5000;
        for (String codec : new String[]{"none", "gzip"}) {
            pp.put("compression.type", codec);
            try (KafkaProducer<String, String> prod = new KafkaProducer<>(pp)) {
                for (String c : new String[]{"lz4", "snappy", "gzip", "zstd", "uncompressed"})
                    for (int i = 0; i < n; i++)
                        prod.send(new ProducerRecord<>("jc-" + c, 0, "k" + i, codec + " value " + i + " " + "x".repeat(i % 300)));
                prod.flush();
            }
        }
        Properties cp = new Properties();
        cp.putAll(p);
        cp.put("key.deserializer", "org.apache.kafka.common.serialization.StringDeserializer");
        cp.put("value.deserializer", "org.apache.kafka.common.serialization.StringDeserializer");
        cp.put("check.crcs", "true");
        for (String c : new String[]{"lz4", "snappy", "gzip", "zstd", "uncompressed"}) {
            try (KafkaConsumer<String, String> cons = new KafkaConsumer<>(cp)) {
                TopicPartition tp = new TopicPartition("jc-" + c, 0);
                cons.assign(List.of(tp));
                cons.seekToBeginning(List.of(tp));
                int got = 0; long deadline = System.currentTimeMillis() + 30000;
                while (got < 2 * n && System.currentTimeMillis() < deadline) {
                    for (ConsumerRecord<String, String> r : cons.poll(Duration.ofMillis(200))) {
                        String codec = got < n ? "none" : "gzip";
                        int i = got % n;
                        String want = codec + " value " + i + " " + "x".repeat(i % 300);
                        if (r.offset() != got || !r.value().equals(want) || !r.key().equals("k" + i))
                            throw new AssertionError(c + ": record " + got + " is " + r);
                        got++;
                    }
                }
                if (got != 2 * n) throw new AssertionError(c + ": got " + got);
                System.out.println("java consumer read " + got + " records of jc-" + c + " intact");
            }
        }
    }
}
