//! `corelog topic create|delete|list|describe|alter|delete-records`.
//!
//! Invariant: `describe --format json` prints exactly
//! {"name","partitions":[{"partition","leader_node","leader_shard",
//! "log_start_offset","log_end_offset","high_watermark"}],"config":{k:v}}.

use serde_json::json;

use super::{CliError, CliResult, Format, TopicCommand};
use crate::client::{Admin, ClientConfig};
use crate::config::TopicConfig;
use crate::protocol::messages::TopicInfo;

pub(crate) async fn run(client: ClientConfig, cmd: TopicCommand) -> CliResult {
    // Check what can be checked locally before connecting.
    if let TopicCommand::Create { configs, .. } | TopicCommand::Alter { configs, .. } = &cmd {
        parse_configs(configs)?;
    }
    let admin = Admin::connect(client).await?;
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            configs,
        } => {
            let configs = parse_configs(&configs)?;
            admin.create_topic(&name, partitions, &configs).await?;
            eprintln!(
                "created topic {name} with {}",
                super::plural(u64::from(partitions), "partition")
            );
        }
        TopicCommand::Delete { name } => {
            admin.delete_topic(&name).await?;
            eprintln!("deleted topic {name}");
        }
        TopicCommand::List { format } => {
            let names = admin.list_topics().await?;
            match format {
                Format::Text => {
                    for n in names {
                        println!("{n}");
                    }
                }
                Format::Json => println!("{}", json!(names)),
            }
        }
        TopicCommand::Alter { name, configs } => {
            let configs = parse_configs(&configs)?;
            admin.alter_topic_config(&name, &configs).await?;
            let changes: Vec<String> = configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            eprintln!("altered topic {name}: {}", changes.join(" "));
        }
        TopicCommand::DeleteRecords {
            name,
            partition,
            before,
        } => {
            let start = admin.delete_records(&name, partition, before).await?;
            eprintln!("{name}/{partition}: log start offset is now {start}");
        }
        TopicCommand::Describe { name, format } => {
            let info = admin.describe_topic(&name).await?;
            match format {
                Format::Json => println!("{}", describe_json(&info)),
                Format::Text => print!("{}", describe_text(&info)),
            }
        }
    }
    Ok(())
}

/// `key=value` pairs, each key checked against the known topic settings.
fn parse_configs(items: &[String]) -> Result<Vec<(String, String)>, CliError> {
    let mut probe = TopicConfig::default();
    items
        .iter()
        .map(|item| {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| CliError::Message(format!("--config {item}: expected KEY=VALUE")))?;
            let (k, v) = (k.trim(), v.trim());
            probe
                .set(k, v)
                .map_err(|e| CliError::Message(format!("--config {item}: {e}")))?;
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

pub(crate) fn describe_json(info: &TopicInfo) -> serde_json::Value {
    let partitions: Vec<_> = info
        .partitions
        .iter()
        .map(|p| {
            json!({
                "partition": p.partition,
                "leader_node": p.leader_node,
                "leader_shard": p.leader_shard,
                "log_start_offset": p.log_start_offset,
                "log_end_offset": p.log_end_offset,
                "high_watermark": p.high_watermark,
            })
        })
        .collect();
    let config: serde_json::Map<String, serde_json::Value> = info
        .configs
        .iter()
        .map(|c| (c.key.clone(), json!(c.value)))
        .collect();
    json!({ "name": info.name, "partitions": partitions, "config": config })
}

fn describe_text(info: &TopicInfo) -> String {
    let mut s = format!(
        "topic: {}\npartitions: {}\n",
        info.name,
        info.partitions.len()
    );
    for c in &info.configs {
        s.push_str(&format!("config: {}={}\n", c.key, c.value));
    }
    for p in &info.partitions {
        s.push_str(&format!(
            "partition {}: leader_node={} leader_shard={} log_start_offset={} log_end_offset={} high_watermark={}\n",
            p.partition, p.leader_node, p.leader_shard, p.log_start_offset, p.log_end_offset, p.high_watermark
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::messages::{ConfigEntry, PartitionInfo};

    #[test]
    fn describe_json_shape() {
        let info = TopicInfo {
            name: "t".into(),
            error: None,
            partitions: vec![PartitionInfo {
                partition: 0,
                leader_node: 0,
                leader_shard: 1,
                log_start_offset: 0,
                log_end_offset: 5,
                high_watermark: 5,
            }],
            configs: vec![ConfigEntry {
                key: "flush".into(),
                value: "always".into(),
            }],
        };
        let v = describe_json(&info);
        assert_eq!(v["name"], "t");
        assert_eq!(v["partitions"][0]["leader_shard"], 1);
        assert_eq!(v["partitions"][0]["high_watermark"], 5);
        assert_eq!(v["config"]["flush"], "always");
    }

    #[test]
    fn config_pairs() {
        assert_eq!(
            parse_configs(&["flush=always".into()]).expect("ok"),
            vec![("flush".to_string(), "always".to_string())]
        );
        assert!(parse_configs(&["flush".into()]).is_err());
        assert!(parse_configs(&["bogus=1".into()]).is_err());
    }
}
