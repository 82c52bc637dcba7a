//! The machine a result was measured on, read from /proc (best effort).
//!
//! Invariant: never fails; a value that cannot be read is "unknown" / 0.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineInfo {
    pub cpu_model: String,
    /// Logical CPUs listed in /proc/cpuinfo.
    pub cores: usize,
    /// CPUs this process may run on (its affinity).
    pub cpus_available: usize,
    pub memory_bytes: u64,
    pub kernel: String,
    pub hostname: String,
}

impl MachineInfo {
    pub fn read() -> MachineInfo {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                matches!(k.trim(), "model name" | "Model" | "cpu model")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let cores = cpuinfo
            .lines()
            .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
            .count();
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                let rest = l.strip_prefix("MemTotal:")?;
                let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
                Some(kib * 1024)
            })
            .unwrap_or(0);
        let read1 = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into())
        };
        MachineInfo {
            cpu_model,
            cores,
            cpus_available: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            memory_bytes,
            kernel: read1("/proc/sys/kernel/osrelease"),
            hostname: read1("/proc/sys/kernel/hostname"),
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "{}, {} CPUs ({} available), {:.1} GiB, Linux {}",
            self.cpu_model,
            self.cores,
            self.cpus_available,
            self.memory_bytes as f64 / (1u64 << 30) as f64,
            self.kernel
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_something() {
        let m = super::MachineInfo::read();
        assert!(!m.kernel.is_empty());
        assert!(!m.summary().is_empty());
    }
}
