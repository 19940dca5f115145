//! The CNI protocol (spec 1.0): network configs from a directory, plugins
//! executed with `CNI_*` in the environment and the config on stdin, lists
//! chained through `prevResult`, errors read from the plugin's JSON.

use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The CNI version berth speaks when a config names none.
pub const CNI_VERSION: &str = "1.0.0";

/// A network config list, as loaded (a single `.conf` is wrapped in one).
#[derive(Debug, Clone)]
pub struct NetworkList(pub Value);

/// Where a plugin runs and for which container.
#[derive(Debug, Clone)]
pub struct Attachment<'a> {
    pub plugin_dir: &'a Path,
    pub container_id: &'a str,
    pub netns: &'a Path,
    pub ifname: &'a str,
}

/// Finds the config named `name` in `dir` (`*.conflist`, `*.conf`,
/// `*.json`, in name order, as libcni does).
pub fn load(dir: &Path, name: &str) -> Result<NetworkList, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("read the CNI config dir {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf" | "json")
            )
        })
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("read {}: {e}", f.display()))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| format!("CNI config {} is not JSON: {e}", f.display()))?;
        if v.get("name").and_then(Value::as_str) != Some(name) {
            continue;
        }
        let version = v
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or(CNI_VERSION)
            .to_string();
        let list = if v.get("plugins").is_some() {
            v
        } else if v.get("type").is_some() {
            json!({"cniVersion": version, "name": name, "plugins": [v]})
        } else {
            return Err(format!(
                "CNI config {} has neither \"plugins\" nor \"type\"",
                f.display()
            ));
        };
        let plugins = list["plugins"].as_array().map(Vec::len).unwrap_or(0);
        if plugins == 0 {
            return Err(format!("CNI config {} lists no plugins", f.display()));
        }
        return Ok(NetworkList(list));
    }
    Err(format!(
        "no CNI network named {name:?} in {}",
        dir.display()
    ))
}

impl NetworkList {
    /// Gives `ports` to the plugins that declare the `portMappings`
    /// capability, as their `runtimeConfig` (the CNI conventions).
    pub fn set_port_mappings(&mut self, ports: &[berth_state::PortMapping]) {
        if ports.is_empty() {
            return;
        }
        let mappings: Vec<Value> = ports
            .iter()
            .map(|p| {
                let mut m = json!({
                    "hostPort": p.host_port,
                    "containerPort": p.container_port,
                    "protocol": if p.protocol.is_empty() { "tcp" } else { p.protocol.as_str() },
                });
                if !p.host_ip.is_empty() {
                    m["hostIP"] = json!(p.host_ip);
                }
                m
            })
            .collect();
        if let Some(plugins) = self.0["plugins"].as_array_mut() {
            for p in plugins {
                if p["capabilities"]["portMappings"] == json!(true) {
                    p["runtimeConfig"]["portMappings"] = json!(mappings);
                }
            }
        }
    }

    fn plugins(&self) -> Vec<Value> {
        self.0["plugins"].as_array().cloned().unwrap_or_default()
    }

    /// The config one plugin gets on stdin: its own section plus the
    /// list's name and version, and the previous result.
    fn plugin_conf(&self, plugin: &Value, prev: Option<&Value>) -> Value {
        let mut conf = plugin.clone();
        conf["name"] = self.0["name"].clone();
        conf["cniVersion"] = self
            .0
            .get("cniVersion")
            .cloned()
            .unwrap_or_else(|| json!(CNI_VERSION));
        if let Some(p) = prev {
            conf["prevResult"] = p.clone();
        }
        conf
    }

    /// ADD through the whole list; returns the last plugin's result.
    pub fn add(&self, at: &Attachment<'_>) -> Result<Value, String> {
        let mut prev: Option<Value> = None;
        for p in self.plugins() {
            let conf = self.plugin_conf(&p, prev.as_ref());
            prev = Some(exec(at, "ADD", &conf)?);
        }
        prev.ok_or_else(|| "the CNI list has no plugins".into())
    }

    /// DEL through the list in reverse; every plugin is tried, the first
    /// error is returned.
    pub fn del(&self, at: &Attachment<'_>, result: Option<&Value>) -> Result<(), String> {
        let mut first_err = None;
        for p in self.plugins().iter().rev() {
            let conf = self.plugin_conf(p, result);
            if let Err(e) = exec(at, "DEL", &conf) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Runs one plugin; its stdout is the result, or an error object.
fn exec(at: &Attachment<'_>, command: &str, conf: &Value) -> Result<Value, String> {
    let kind = conf["type"]
        .as_str()
        .ok_or_else(|| format!("a CNI plugin config has no \"type\": {conf}"))?;
    if kind.contains('/') || kind.is_empty() {
        return Err(format!("CNI plugin type {kind:?} is not a plain name"));
    }
    let bin = at.plugin_dir.join(kind);
    if !bin.is_file() {
        return Err(format!(
            "CNI plugin {kind:?} not found in {}",
            at.plugin_dir.display()
        ));
    }
    let netns = if at.netns.exists() {
        at.netns.display().to_string()
    } else {
        String::new()
    };
    let mut child = Command::new(&bin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", at.container_id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", at.ifname)
        .env("CNI_PATH", at.plugin_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run CNI plugin {}: {e}", bin.display()))?;
    let input = conf.to_string();
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| format!("write the config to CNI plugin {kind}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("wait for CNI plugin {kind}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let detail = serde_json::from_str::<Value>(&stdout)
            .ok()
            .map(|v| {
                format!(
                    "code {}: {} {}",
                    v["code"],
                    v["msg"].as_str().unwrap_or(""),
                    v["details"].as_str().unwrap_or("")
                )
            })
            .unwrap_or_else(|| {
                format!(
                    "{}{}",
                    stdout.trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            });
        return Err(format!(
            "CNI plugin {kind} {command} failed ({}): {}",
            out.status,
            detail.trim()
        ));
    }
    if command == "DEL" || stdout.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&stdout)
        .map_err(|e| format!("CNI plugin {kind} {command} printed no JSON result: {e}"))
}

/// The first IP address of a result (`ips[0].address` without the
/// prefix length).
pub fn first_ip(result: &Value) -> Option<String> {
    let addr = result["ips"].as_array()?.first()?["address"].as_str()?;
    Some(addr.split('/').next().unwrap_or(addr).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_confs_are_wrapped_and_names_matched() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("10-a.conf"),
            r#"{"cniVersion":"0.4.0","name":"a","type":"bridge"}"#,
        )
        .unwrap();
        std::fs::write(t.path().join("junk.txt"), "not json").unwrap();
        let l = load(t.path(), "a").unwrap();
        assert_eq!(l.0["plugins"][0]["type"], "bridge");
        assert_eq!(l.0["cniVersion"], "0.4.0");
        let c = l.plugin_conf(&l.plugins()[0], Some(&json!({"ips": []})));
        assert_eq!(c["name"], "a");
        assert!(c.get("prevResult").is_some());
        assert!(load(t.path(), "b")
            .unwrap_err()
            .contains("no CNI network named"));
    }

    #[test]
    fn port_mappings_go_to_the_plugins_that_ask_for_them() {
        let mut l = NetworkList(json!({"name": "n", "plugins": [
            {"type": "bridge"},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]}));
        l.set_port_mappings(&[berth_state::PortMapping {
            container_port: 80,
            host_port: 8080,
            ..Default::default()
        }]);
        assert!(l.0["plugins"][0].get("runtimeConfig").is_none());
        assert_eq!(
            l.0["plugins"][1]["runtimeConfig"]["portMappings"],
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}])
        );
    }

    #[test]
    fn first_ip_drops_the_prefix() {
        let r = json!({"ips": [{"address": "10.1.0.5/24"}]});
        assert_eq!(first_ip(&r).as_deref(), Some("10.1.0.5"));
        assert_eq!(first_ip(&json!({})), None);
    }
}
