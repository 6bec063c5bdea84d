//! `mlpdrive datasize PRESET`: how big a workload's data set must be.
//!
//! Dispatches on the preset's workload. Checkpoint presets print their
//! total and per-rank bytes and files (`workload::checkpoint::datasize`).
//! Training applies the MLPerf
//! Storage rule (`rules.calculate_training_data_size`): at least 5 × the
//! client hosts' memory and at least 500 steps per epoch for the given
//! accelerators; more than 10,000 files suggests `num_subfolders_train`.

use crate::cli::DatasizeArgs;
use crate::config::{self, training::TrainingConfig};
use crate::error::{EXIT_OK, Error};

/// The rules' memory multiplier (`MOST_MEMORY_MULTIPLIER`).
pub const MEMORY_MULTIPLIER: u64 = 5;
/// Files per subfolder above which the rules suggest subfolders.
pub const FILES_PER_SUBFOLDER: u64 = 10_000;

pub fn run(args: &DatasizeArgs) -> Result<i32, Error> {
    let cfg = config::load(&args.workload, &args.set, None, None)?;
    match cfg.common.workload.as_str() {
        "training" => {
            let t = TrainingConfig::from_run_config(&cfg)?;
            let (Some(mem), Some(hosts), Some(acc)) = (args.client_memory_gib, args.hosts, args.accelerators) else {
                return Err(Error::usage(
                    "datasize for a training preset needs --client-memory-gib M (memory per client host), \
                     --hosts H (client hosts) and --accelerators A (simulated accelerators in total)",
                ));
            };
            if hosts == 0 || acc == 0 || mem <= 0.0 || !mem.is_finite() {
                return Err(Error::usage("--client-memory-gib, --hosts and --accelerators must be greater than 0"));
            }
            let size = training_size(&t, mem, hosts, acc);
            print!("{}", size.render(&cfg.source, &args.workload));
            Ok(EXIT_OK)
        }
        "checkpoint" => {
            print!("{}", crate::workload::checkpoint::datasize(&args.workload, &args.set, args.ranks, args.subset)?);
            Ok(EXIT_OK)
        }
        other => Err(Error::usage(format!(
            "datasize: workload '{other}' has no data set to size (training and checkpoint presets do)"
        ))),
    }
}

/// The sizing rule's result.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingSize {
    pub files_by_memory: u64,
    pub files_by_steps: u64,
    pub num_files_train: u64,
    pub dataset_bytes: u64,
    /// Suggested `num_subfolders_train` (0: none needed).
    pub num_subfolders_train: u64,
    pub memory_total_bytes: u64,
}

/// Applies the rule (spec §3) for `hosts` client hosts of `mem_gib` GiB
/// and `accelerators` in total.
pub fn training_size(t: &TrainingConfig, mem_gib: f64, hosts: u64, accelerators: u64) -> TrainingSize {
    let memory_total_bytes = (hosts as f64 * mem_gib * (1u64 << 30) as f64) as u64;
    let per_file = t.dataset.num_samples_per_file as f64 * t.dataset.record_length_bytes;
    let files_by_memory = ((MEMORY_MULTIPLIER as f64 * memory_total_bytes as f64) / per_file).floor() as u64;
    let files_by_steps = crate::config::training::MIN_STEPS_PER_EPOCH * accelerators * t.reader.batch_size
        / t.dataset.num_samples_per_file;
    let num_files_train = files_by_memory.max(files_by_steps);
    let dataset_bytes = (num_files_train as f64 * per_file) as u64;
    let num_subfolders_train =
        if num_files_train > FILES_PER_SUBFOLDER { num_files_train / FILES_PER_SUBFOLDER } else { 0 };
    TrainingSize {
        files_by_memory,
        files_by_steps,
        num_files_train,
        dataset_bytes,
        num_subfolders_train,
        memory_total_bytes,
    }
}

impl TrainingSize {
    fn render(&self, source: &str, preset: &str) -> String {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let mut s = format!("data set size for {source}\n");
        s.push_str(&format!(
            "  files by memory (5 x {:.1} GiB of client memory): {}\n",
            gib(self.memory_total_bytes),
            self.files_by_memory
        ));
        s.push_str(&format!("  files by steps (500 steps per epoch):             {}\n", self.files_by_steps));
        s.push_str(&format!("num_files_train: {}\n", self.num_files_train));
        s.push_str(&format!("dataset_bytes: {} ({:.0} GiB)\n", self.dataset_bytes, gib(self.dataset_bytes)));
        let mut sets = format!("--set dataset.num_files_train={}", self.num_files_train);
        if self.num_subfolders_train > 0 {
            s.push_str(&format!("num_subfolders_train: {} (more than 10,000 files)\n", self.num_subfolders_train));
            sets.push_str(&format!(" --set dataset.num_subfolders_train={}", self.num_subfolders_train));
        } else {
            s.push_str("num_subfolders_train: 0\n");
        }
        s.push_str(&format!("generate: mlpdrive datagen {preset} --target URI {sets}\n"));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preset(name: &str) -> TrainingConfig {
        TrainingConfig::from_run_config(&config::load(name, &[], None, None).unwrap()).unwrap()
    }

    /// The spec's measured `mlpstorage training datasize` examples: 1 host,
    /// 256 GiB, 8 accelerators.
    #[test]
    fn matches_the_reference_examples() {
        let u = training_size(&preset("training/unet3d_h100"), 256.0, 1, 8);
        assert_eq!(u.num_files_train, 28_000, "the step rule wins");
        assert_eq!(u.dataset_bytes / (1 << 30), 3_822, "3,823 GiB rounded");
        assert_eq!((u.dataset_bytes as f64 / (1u64 << 30) as f64).round(), 3_823.0);
        let r = training_size(&preset("training/resnet50_a100"), 256.0, 1, 8);
        assert_eq!(r.num_files_train, 9_581);
        assert_eq!((r.dataset_bytes as f64 / (1u64 << 30) as f64).round(), 1_280.0);
        let c = training_size(&preset("training/cosmoflow_h100"), 256.0, 1, 8);
        assert_eq!(c.num_files_train, 485_909);
        assert_eq!(c.num_subfolders_train, 48);
        // a100 and h100 give the same numbers (same batch sizes).
        assert_eq!(training_size(&preset("training/unet3d_a100"), 256.0, 1, 8), u);
    }
}
