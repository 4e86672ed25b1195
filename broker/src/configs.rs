//! Topic configs Sluice implements: names, defaults, validation, and the effective value of each.
//!
//! Configs not implemented yet are refused with INVALID_CONFIG instead of being silently ignored
//! (e.g. `cleanup.policy=compact`). Kafka's `segment.bytes`/`segment.ms` are accepted for
//! compatibility; Sluice cuts segment objects by its own thresholds. The few configs that only
//! ever described message formats older than v2 ([`IGNORED_TOPIC_CONFIGS`]) are accepted and
//! dropped, as Kafka 3.x did.

use std::collections::BTreeMap;

use storage::batch::Compression;
use storage::{Retention, TimestampType};

/// Kafka's config types (DescribeConfigs v3+ `config_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Short = 4,
    Long = 5,
    Double = 6,
    List = 7,
}

#[derive(Debug, Clone, Copy)]
pub struct ConfigDef {
    pub name: &'static str,
    pub default: &'static str,
    pub config_type: ConfigType,
    pub doc: &'static str,
    validate: fn(&str) -> Result<(), String>,
}

fn long_at_least(min: i64) -> impl Fn(&str) -> Result<(), String> {
    move |v| match v.trim().parse::<i64>() {
        Ok(n) if n >= min => Ok(()),
        Ok(n) => Err(format!("{n} is below the minimum {min}")),
        Err(_) => Err(format!("'{v}' is not an integer")),
    }
}

fn validate_retention(v: &str) -> Result<(), String> {
    long_at_least(-1)(v)
}
fn validate_positive_long(v: &str) -> Result<(), String> {
    long_at_least(1)(v)
}
fn validate_non_negative(v: &str) -> Result<(), String> {
    long_at_least(0)(v)
}
fn validate_max_message_bytes(v: &str) -> Result<(), String> {
    long_at_least(0)(v)?;
    let n: i64 = v
        .trim()
        .parse()
        .map_err(|_| format!("'{v}' is not an integer"))?;
    if n > i64::from(i32::MAX) {
        return Err(format!("{n} exceeds the maximum {}", i32::MAX));
    }
    Ok(())
}
fn validate_cleanup_policy(v: &str) -> Result<(), String> {
    for policy in v.split(',').map(str::trim) {
        match policy {
            "delete" => {}
            "compact" => {
                return Err("cleanup.policy=compact is not supported by Sluice yet".to_string())
            }
            other => return Err(format!("unknown cleanup.policy '{other}'")),
        }
    }
    Ok(())
}
fn validate_timestamp_type(v: &str) -> Result<(), String> {
    match v {
        "CreateTime" | "LogAppendTime" => Ok(()),
        other => Err(format!(
            "message.timestamp.type must be CreateTime or LogAppendTime, not '{other}'"
        )),
    }
}
/// Kafka's `compression.type` values (case-sensitive, as Kafka checks them).
const COMPRESSION_TYPES: &[&str] = &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"];

fn validate_compression_type(v: &str) -> Result<(), String> {
    if COMPRESSION_TYPES.contains(&v) {
        Ok(())
    } else {
        Err(format!(
            "'{v}' is not one of {}",
            COMPRESSION_TYPES.join(", ")
        ))
    }
}
fn validate_min_isr(v: &str) -> Result<(), String> {
    long_at_least(1)(v)
}

/// Topic configs accepted in CreateTopics/AlterConfigs/IncrementalAlterConfigs and dropped
/// (neither stored nor described). `message.format.version` chose the on-disk format of pre-v2
/// message versions; Kafka 3.x accepted and ignored it for v2 (tools and librdkafka's test suite
/// still set it). Kafka 4.x refuses it as unknown (INVALID_CONFIG), so this is a deliberate
/// leniency (ARCHITECTURE.md, D9).
pub const IGNORED_TOPIC_CONFIGS: &[&str] = &["message.format.version"];

/// Whether `name` is accepted and dropped (see [`IGNORED_TOPIC_CONFIGS`]).
pub fn is_ignored_topic_config(name: &str) -> bool {
    IGNORED_TOPIC_CONFIGS.contains(&name)
}

/// `configs` without the [`IGNORED_TOPIC_CONFIGS`].
pub fn without_ignored(mut configs: BTreeMap<String, String>) -> BTreeMap<String, String> {
    configs.retain(|name, _| !is_ignored_topic_config(name));
    configs
}

/// Every topic config Sluice accepts.
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: "cleanup.policy",
        default: "delete",
        config_type: ConfigType::List,
        doc: "Only 'delete' is supported.",
        validate: validate_cleanup_policy,
    },
    ConfigDef {
        name: "compression.type",
        default: "producer",
        config_type: ConfigType::String,
        doc: "producer: batches are stored as the producer compressed them; uncompressed, gzip, snappy, lz4 or zstd: batches in another codec are recompressed to it on the way in.",
        validate: validate_compression_type,
    },
    ConfigDef {
        name: "max.message.bytes",
        default: "1048588",
        config_type: ConfigType::Int,
        doc: "Largest record batch accepted.",
        validate: validate_max_message_bytes,
    },
    ConfigDef {
        name: "message.timestamp.type",
        default: "CreateTime",
        config_type: ConfigType::String,
        doc: "CreateTime or LogAppendTime.",
        validate: validate_timestamp_type,
    },
    ConfigDef {
        name: "min.insync.replicas",
        default: "1",
        config_type: ConfigType::Int,
        doc: "Accepted for compatibility: durability comes from the WAL and object store.",
        validate: validate_min_isr,
    },
    ConfigDef {
        name: "retention.bytes",
        default: "-1",
        config_type: ConfigType::Long,
        doc: "Per-partition size limit; whole segment objects are deleted.",
        validate: validate_retention,
    },
    ConfigDef {
        name: "retention.ms",
        default: "604800000",
        config_type: ConfigType::Long,
        doc: "Age limit; whole segment objects are deleted.",
        validate: validate_retention,
    },
    ConfigDef {
        name: "segment.bytes",
        default: "1073741824",
        config_type: ConfigType::Int,
        doc: "Accepted for compatibility; Sluice uses its own segment thresholds.",
        validate: validate_positive_long,
    },
    ConfigDef {
        name: "segment.ms",
        default: "604800000",
        config_type: ConfigType::Long,
        doc: "Accepted for compatibility; Sluice uses its own segment thresholds.",
        validate: validate_positive_long,
    },
    ConfigDef {
        name: "delete.retention.ms",
        default: "86400000",
        config_type: ConfigType::Long,
        doc: "Accepted for compatibility (only meaningful with compaction).",
        validate: validate_non_negative,
    },
];

pub fn topic_config_def(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|def| def.name == name)
}

/// Checks one `name=value` pair: known name, valid value.
pub fn validate_topic_config(name: &str, value: &str) -> Result<(), String> {
    let def = topic_config_def(name).ok_or_else(|| format!("unknown topic config '{name}'"))?;
    (def.validate)(value).map_err(|reason| format!("invalid value for {name}: {reason}"))
}

/// Validates a whole set of explicitly-set configs.
pub fn validate_topic_configs(configs: &BTreeMap<String, String>) -> Result<(), String> {
    configs
        .iter()
        .try_for_each(|(name, value)| validate_topic_config(name, value))
}

/// The effective value of a config: explicitly set, else the default.
pub fn effective<'a>(configs: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    configs
        .get(name)
        .map(String::as_str)
        .or_else(|| topic_config_def(name).map(|def| def.default))
}

fn effective_i64(configs: &BTreeMap<String, String>, name: &str, fallback: i64) -> i64 {
    effective(configs, name)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(fallback)
}

pub fn max_message_bytes(configs: &BTreeMap<String, String>) -> usize {
    usize::try_from(effective_i64(configs, "max.message.bytes", 1_048_588)).unwrap_or(usize::MAX)
}

pub fn timestamp_type(configs: &BTreeMap<String, String>) -> TimestampType {
    match effective(configs, "message.timestamp.type") {
        Some("LogAppendTime") => TimestampType::LogAppendTime,
        _ => TimestampType::CreateTime,
    }
}

/// The codec every stored batch of the topic must use; `None` for `compression.type=producer`
/// (batches stored as the producer compressed them).
pub fn compression_type(configs: &BTreeMap<String, String>) -> Option<Compression> {
    match effective(configs, "compression.type") {
        Some("uncompressed") => Some(Compression::None),
        Some("gzip") => Some(Compression::Gzip),
        Some("snappy") => Some(Compression::Snappy),
        Some("lz4") => Some(Compression::Lz4),
        Some("zstd") => Some(Compression::Zstd),
        _ => None,
    }
}

pub fn retention(configs: &BTreeMap<String, String>) -> Retention {
    Retention {
        ms: effective_i64(configs, "retention.ms", 604_800_000),
        bytes: effective_i64(configs, "retention.bytes", -1),
    }
}

/// Topic names Kafka accepts: 1..=249 chars of `[a-zA-Z0-9._-]`, not "." or "..".
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name cannot be '{name}'"));
    }
    if name.len() > 249 {
        return Err(format!(
            "topic name is {} characters, the maximum is 249",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!("topic name contains the illegal character {bad:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_is_refused_and_delete_accepted() {
        assert!(validate_topic_config("cleanup.policy", "compact").is_err());
        assert!(validate_topic_config("cleanup.policy", "delete,compact").is_err());
        assert!(validate_topic_config("cleanup.policy", "delete").is_ok());
    }

    #[test]
    fn unknown_configs_and_bad_values_are_refused() {
        assert!(validate_topic_config("no.such.config", "1").is_err());
        assert!(validate_topic_config("retention.ms", "soon").is_err());
        assert!(validate_topic_config("retention.ms", "-2").is_err());
        assert!(validate_topic_config("retention.ms", "-1").is_ok());
        assert!(validate_topic_config("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate_topic_config("message.timestamp.type", "Whenever").is_err());
    }

    #[test]
    fn compression_types_are_kafkas() {
        let mut configs = BTreeMap::new();
        assert_eq!(compression_type(&configs), None, "default: producer");
        for (value, codec) in [
            ("producer", None),
            ("uncompressed", Some(Compression::None)),
            ("gzip", Some(Compression::Gzip)),
            ("snappy", Some(Compression::Snappy)),
            ("lz4", Some(Compression::Lz4)),
            ("zstd", Some(Compression::Zstd)),
        ] {
            assert!(validate_topic_config("compression.type", value).is_ok());
            configs.insert("compression.type".to_string(), value.to_string());
            assert_eq!(compression_type(&configs), codec, "{value}");
        }
        // Kafka refuses these too (INVALID_CONFIG): "none" is a producer setting, values are
        // case-sensitive.
        for bad in ["none", "LZ4", "brotli", ""] {
            assert!(
                validate_topic_config("compression.type", bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn message_format_version_is_accepted_and_dropped() {
        let configs = BTreeMap::from([
            ("message.format.version".to_string(), "0.10.0".to_string()),
            ("retention.ms".to_string(), "1000".to_string()),
        ]);
        let kept = without_ignored(configs);
        assert_eq!(kept.len(), 1);
        assert!(validate_topic_configs(&kept).is_ok());
        assert!(validate_topic_config("message.format.version", "0.10.0").is_err());
    }

    #[test]
    fn effective_values_fall_back_to_defaults() {
        let mut configs = BTreeMap::new();
        assert_eq!(max_message_bytes(&configs), 1_048_588);
        assert_eq!(timestamp_type(&configs), TimestampType::CreateTime);
        configs.insert(
            "message.timestamp.type".to_string(),
            "LogAppendTime".to_string(),
        );
        configs.insert("retention.ms".to_string(), "1000".to_string());
        assert_eq!(timestamp_type(&configs), TimestampType::LogAppendTime);
        assert_eq!(
            retention(&configs),
            Retention {
                ms: 1000,
                bytes: -1
            }
        );
    }

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("orders.v1_x-y").is_ok());
        for bad in ["", ".", "..", "bad/name", "sp ace", "ü"] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(validate_topic_name(&"a".repeat(249)).is_ok());
        assert!(validate_topic_name(&"a".repeat(250)).is_err());
    }
}
