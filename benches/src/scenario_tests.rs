//! End-to-end checks of the scenarios against librdkafka's in-memory mock cluster: each scenario
//! really produces, acknowledges, times and consumes records, not merely compiles.

use rdkafka::mocking::MockCluster;

use crate::consume::{self, ConsumeArgs};
use crate::kafka::KafkaArgs;
use crate::latency::{self, LatencyArgs};
use crate::produce::{self, ProduceArgs};
use crate::walbench::{self, WalArgs};

fn kafka_args(bootstrap: &str, topic: &str) -> KafkaArgs {
    KafkaArgs {
        bootstrap: bootstrap.to_string(),
        topic: topic.to_string(),
        partitions: 3,
        topic_configs: Vec::new(),
        extra: Vec::new(),
        broker_pid: Some(std::process::id()),
        label: String::new(),
        setup_timeout_secs: 20,
        metrics_addr: None,
        wal_linger_ms: 5.0,
    }
}

#[test]
fn produce_then_consume_everything() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("through", 3, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    let produced = produce::run(&ProduceArgs {
        kafka: kafka_args(&bootstrap, "through"),
        record_size: 512,
        seconds: 10.0,
        bytes: Some(2 << 20),
        acks: "all".to_string(),
        linger_ms: 5,
        compressible: false,
        flush_timeout_secs: 20,
    })
    .expect("produce runs");
    // The byte bound, not the time bound, ended the run: exactly 4096 records of 512 bytes.
    assert_eq!(produced.get("records"), Some(4096.0));
    assert_eq!(produced.get("mib"), Some(2.0));
    assert!(produced.get("mib_per_s").is_some_and(|rate| rate > 0.0));
    assert!(produced
        .get("broker_peak_rss_mib")
        .is_some_and(|mib| mib > 0.0));

    let consumed = consume::run(&ConsumeArgs {
        kafka: kafka_args(&bootstrap, "through"),
        bytes: None,
        seconds: 30.0,
        group: "loadgen-test".to_string(),
    })
    .expect("consume runs");
    assert_eq!(consumed.get("records"), Some(4096.0));
    assert_eq!(consumed.get("mib"), Some(2.0));
    assert!(consumed.get("mib_per_s").is_some_and(|rate| rate > 0.0));
}

#[test]
fn consume_of_a_missing_or_empty_topic_fails() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("empty", 2, 1).expect("topic");
    let result = consume::run(&ConsumeArgs {
        kafka: kafka_args(&cluster.bootstrap_servers(), "empty"),
        bytes: None,
        seconds: 5.0,
        group: "loadgen-test".to_string(),
    });
    assert!(result.is_err());
}

#[test]
fn latency_rate_can_be_given_in_records_per_second() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster
        .create_topic("latency-records", 2, 1)
        .expect("topic");
    let outcome = latency::run(&LatencyArgs {
        kafka: kafka_args(&cluster.bootstrap_servers(), "latency-records"),
        record_size: 1024,
        // Ignored: --rate-records wins.
        rate_mibps: 20.0,
        rate_records: Some(1500.0),
        seconds: 1.0,
        warmup_seconds: 0.2,
        acks: "all".to_string(),
        linger_ms: 0,
        drain_timeout_secs: 20,
        samples_out: None,
    })
    .expect("latency runs");
    assert_eq!(outcome.get("measured_records"), Some(1500.0));
    assert_eq!(outcome.get("offered_records_per_s"), Some(1500.0));
    let offered = outcome.get("offered_mib_per_s").expect("offered");
    assert!(
        (offered - 1500.0 / 1024.0).abs() < 1e-9,
        "offered {offered}"
    );
    let ratio = outcome.get("offered_rate_ratio").expect("ratio");
    assert!((0.9..1.1).contains(&ratio), "offered rate ratio {ratio}");
}

#[test]
fn latency_holds_the_offered_rate_and_measures_acks() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("latency", 3, 1).expect("topic");
    let outcome = latency::run(&LatencyArgs {
        kafka: kafka_args(&cluster.bootstrap_servers(), "latency"),
        record_size: 1024,
        rate_mibps: 2.0,
        rate_records: None,
        seconds: 1.0,
        warmup_seconds: 0.25,
        acks: "all".to_string(),
        linger_ms: 0,
        drain_timeout_secs: 20,
        samples_out: None,
    })
    .expect("latency runs");
    // 2 MiB/s of 1 KiB records for one second.
    assert_eq!(outcome.get("measured_records"), Some(2048.0));
    let p50 = outcome.get("ack_p50_ms").expect("p50");
    let p99 = outcome.get("ack_p99_ms").expect("p99");
    assert!(p50 > 0.0 && p50 <= p99, "p50 {p50} p99 {p99}");
    assert!(outcome.get("ack_p999_ms").expect("p999") >= p99);
    let ratio = outcome.get("offered_rate_ratio").expect("ratio");
    assert!((0.9..1.1).contains(&ratio), "offered rate ratio {ratio}");
}

#[test]
fn wal_benchmark_measures_group_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outcomes = walbench::run(&WalArgs {
        dir: dir.path().to_path_buf(),
        submitters: vec![1, 4],
        record_size: 256,
        seconds: 0.2,
        fsync: true,
    })
    .expect("wal benchmark runs");
    assert_eq!(outcomes.len(), 2);
    for outcome in &outcomes {
        assert!(outcome.get("records_per_s").is_some_and(|rate| rate > 0.0));
        assert!(outcome.get("append_p50_ms").is_some());
        assert!(outcome
            .get("records_per_group")
            .is_some_and(|records| records >= 1.0));
    }
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
}
