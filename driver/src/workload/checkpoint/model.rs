//! Which bytes a checkpoint holds: the transformer's parameter count and
//! how model and optimizer state are sharded over ranks, with the file names
//! and byte sizes the reference (DLIO's `base_checkpointing.py`, the
//! MLPerf Storage v2.0 branch) writes. Pure arithmetic; see
//! docs/workloads/checkpoint.md for the formulas.

use crate::config::checkpoint::{CheckpointConfig, Mode};

/// fp16 model state.
const MODEL_BYTES_PER_PARAM: u64 = 2;
/// fp32 optimizer state.
const OPTIM_BYTES_PER_ELEM: u64 = 4;

/// The architecture numbers that size a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub hidden: u64,
    pub ffn: u64,
    pub heads: u64,
    pub kv_heads: u64,
    pub layers: u64,
    pub vocab: u64,
}

/// Parallelism of the full job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parallel {
    pub tp: u64,
    pub pp: u64,
    pub dp: u64,
    pub zero_stage: u8,
}

impl Parallel {
    pub fn mp(&self) -> u64 {
        self.tp * self.pp
    }

    /// Ranks of the full job.
    pub fn world(&self) -> u64 {
        self.mp() * self.dp
    }
}

/// One file a rank writes in each checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardFile {
    /// File name inside `global_epoch1_step<k>/`, with `.pt`.
    pub name: String,
    pub bytes: u64,
}

impl Shape {
    /// K/V projection width: (hidden / heads) × kv_heads (integer division,
    /// as the reference).
    fn kv_dim(&self) -> u64 {
        self.hidden / self.heads * self.kv_heads
    }

    /// Parameters of one transformer layer: two norms, QKV, output
    /// projection, gated MLP (three matrices).
    fn per_layer(&self) -> u64 {
        let h = self.hidden;
        2 * h + h * (h + 2 * self.kv_dim()) + h * h + 3 * h * self.ffn
    }

    /// Total parameters: embedding + lm_head + layers + final norm.
    pub fn parameters(&self) -> u64 {
        2 * self.vocab * self.hidden + self.layers * self.per_layer() + self.hidden
    }
}

/// Model-state elements of layer `index` held by one rank. Layer 0 is the
/// embedding, 1..=L the transformer layers, L+1 the lm_head, L+2 the final
/// norm. Each tensor is divided separately (integer division), matrices by
/// TP, everything by DP under ZeRO-3.
fn layer_elements(s: &Shape, p: &Parallel, index: u64) -> u64 {
    let shard = if p.zero_stage == 3 { p.dp } else { 1 };
    let h = s.hidden;
    if index == 0 || index == s.layers + 1 {
        return h * s.vocab / p.tp / shard;
    }
    if index == s.layers + 2 {
        return h / shard;
    }
    [
        h / shard,
        h * (h + 2 * s.kv_dim()) / p.tp / shard,
        h * h / p.tp / shard,
        h / shard,
        h * 2 * s.ffn / p.tp / shard,
        h * s.ffn / p.tp / shard,
    ]
    .iter()
    .sum()
}

/// First and last layer index (inclusive) of pipeline stage `stage`: layers
/// 1..=L split evenly, the first `L mod PP` stages one more; stage 0 also
/// holds the embedding (0), the last stage lm_head and final norm.
fn layer_range(s: &Shape, p: &Parallel, stage: u64) -> (u64, u64) {
    let per = s.layers / p.pp;
    let rem = s.layers % p.pp;
    let (mut start, mut end) = if stage < rem {
        let start = stage * (per + 1) + 1;
        (start, start + per)
    } else {
        let start = rem * (per + 1) + (stage - rem) * per + 1;
        (start, start + per - 1)
    };
    if stage == p.pp - 1 {
        end = s.layers + 2;
    }
    if stage == 0 {
        start = 0;
    }
    (start, end)
}

/// The files rank `rank` writes in one checkpoint, in the order the
/// reference writes them (model state, then optimizer state).
pub fn rank_files(s: &Shape, p: &Parallel, rank: u64) -> Vec<ShardFile> {
    let mp = p.mp();
    let stage = (rank / p.tp) % p.pp;
    let dp_rank = rank / mp;
    let mp_rank = rank % mp;
    // Without ZeRO only the first data-parallel instance checkpoints.
    if p.zero_stage == 0 && rank >= mp {
        return Vec::new();
    }
    let (start, end) = layer_range(s, p, stage);
    let layer_bytes = |i: u64| layer_elements(s, p, i) * MODEL_BYTES_PER_PARAM;
    let mut files = Vec::new();
    let prefix = format!("zero_pp_rank_{dp_rank}_mp_rank_{mp_rank}");
    if p.zero_stage == 1 || p.zero_stage == 2 {
        if dp_rank == 0 && p.pp > 1 {
            for i in start..=end {
                files.push(ShardFile {
                    name: format!("layer_{i}-model_{mp_rank}_model_states.pt"),
                    bytes: layer_bytes(i),
                });
            }
        } else if dp_rank == 0 {
            let bytes = (start..=end).map(layer_bytes).sum();
            files.push(ShardFile { name: format!("model_{mp_rank}_model_states.pt"), bytes });
        }
    } else {
        let bytes = (start..=end).map(layer_bytes).sum();
        files.push(ShardFile { name: format!("{prefix}_model_states.pt"), bytes });
    }
    // Three groups (fp32 master copy and two Adam moments), each a slice of
    // the parameters plus 5 × hidden small tensors.
    let slice = if p.zero_stage > 0 { s.parameters() / (p.dp * mp) } else { s.parameters() / mp };
    let optim = 3 * (slice + 5 * s.hidden) * OPTIM_BYTES_PER_ELEM;
    files.push(ShardFile { name: format!("{prefix}_optim_states.pt"), bytes: optim });
    files
}

/// The checkpoint of one run: per-rank file sets and totals.
#[derive(Debug, Clone)]
pub struct CheckpointPlan {
    pub model: String,
    pub shape: Shape,
    pub parallel: Parallel,
    pub mode: Mode,
    /// `files[r]`: rank r's files.
    pub files: Vec<Vec<ShardFile>>,
}

impl CheckpointPlan {
    pub fn from_config(cfg: &CheckpointConfig) -> CheckpointPlan {
        let m = &cfg.model;
        let shape = Shape {
            hidden: m.hidden_size,
            ffn: m.ffn_hidden_size,
            heads: m.num_attention_heads,
            kv_heads: m.num_kv_heads,
            layers: m.num_layers,
            vocab: m.vocab_size,
        };
        let parallel = Parallel {
            tp: m.parallelism.tensor.into(),
            pp: m.parallelism.pipeline.into(),
            dp: cfg.data_parallelism().into(),
            zero_stage: m.parallelism.zero_stage,
        };
        let files = (0..u64::from(cfg.ranks)).map(|r| rank_files(&shape, &parallel, r)).collect();
        CheckpointPlan { model: m.name.clone(), shape, parallel, mode: cfg.checkpoint.mode, files }
    }

    pub fn ranks(&self) -> usize {
        self.files.len()
    }

    pub fn rank_bytes(&self, rank: usize) -> u64 {
        self.files[rank].iter().map(|f| f.bytes).sum()
    }

    /// Bytes of one checkpoint, all ranks.
    pub fn total_bytes(&self) -> u64 {
        (0..self.ranks()).map(|r| self.rank_bytes(r)).sum()
    }

    /// Files of one checkpoint, all ranks.
    pub fn file_count(&self) -> usize {
        self.files.iter().map(Vec::len).sum()
    }

    pub fn rank_bytes_min(&self) -> u64 {
        (0..self.ranks()).map(|r| self.rank_bytes(r)).min().unwrap_or(0)
    }

    pub fn rank_bytes_max(&self) -> u64 {
        (0..self.ranks()).map(|r| self.rank_bytes(r)).max().unwrap_or(0)
    }
}

/// Directory of checkpoint `step` (1-based) inside the checkpoint folder.
pub fn step_dir(folder: &str, step: u32) -> String {
    format!("{folder}/global_epoch1_step{step}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: f64 = (1u64 << 30) as f64;

    fn llama(name: &str) -> (Shape, Parallel) {
        let v = 128_256;
        match name {
            "8b" => (
                Shape { hidden: 4096, ffn: 14336, heads: 32, kv_heads: 8, layers: 32, vocab: v },
                Parallel { tp: 1, pp: 1, dp: 8, zero_stage: 3 },
            ),
            "70b" => (
                Shape { hidden: 8192, ffn: 28672, heads: 128, kv_heads: 8, layers: 80, vocab: v },
                Parallel { tp: 8, pp: 1, dp: 8, zero_stage: 3 },
            ),
            "405b" => (
                Shape { hidden: 16384, ffn: 53248, heads: 128, kv_heads: 8, layers: 126, vocab: v },
                Parallel { tp: 8, pp: 32, dp: 2, zero_stage: 1 },
            ),
            "1t" => (
                Shape { hidden: 25872, ffn: 98304, heads: 192, kv_heads: 32, layers: 128, vocab: v },
                Parallel { tp: 8, pp: 64, dp: 2, zero_stage: 1 },
            ),
            _ => unreachable!(),
        }
    }

    /// (total bytes, files, min and max rank bytes) for `ranks` ranks.
    fn totals(s: &Shape, p: &Parallel, ranks: u64) -> (u64, usize, u64, u64) {
        let per: Vec<Vec<ShardFile>> = (0..ranks).map(|r| rank_files(s, p, r)).collect();
        let bytes: Vec<u64> = per.iter().map(|f| f.iter().map(|x| x.bytes).sum()).collect();
        (bytes.iter().sum(), per.iter().map(Vec::len).sum(), *bytes.iter().min().unwrap(), *bytes.iter().max().unwrap())
    }

    fn gib2(b: u64) -> f64 {
        (b as f64 / GIB * 100.0).round() / 100.0
    }

    #[test]
    fn scaled_8b_matches_the_measured_dlio_run() {
        // Spec §1/§2: llama3_8b with num_layers=1, vocab_size=8192, 2 ranks.
        let s = Shape { hidden: 4096, ffn: 14336, heads: 32, kv_heads: 8, layers: 1, vocab: 8192 };
        assert_eq!(s.parameters(), 285_224_960);
        let p = Parallel { tp: 1, pp: 1, dp: 2, zero_stage: 3 };
        let f = rank_files(&s, &p, 1);
        assert_eq!(f[0].name, "zero_pp_rank_1_mp_rank_0_model_states.pt");
        assert_eq!(f[1].name, "zero_pp_rank_1_mp_rank_0_optim_states.pt");
        // On disk DLIO's files are these sizes plus torch zip overhead.
        assert_eq!(f[0].bytes, 285_228_105 - 3_145);
        assert_eq!(f[1].bytes, 1_711_598_037 - 2_517);
        let (total, ..) = totals(&s, &p, 2);
        assert_eq!(format!("{:.6}", total as f64 / GIB), "3.719368");
    }

    #[test]
    fn full_jobs_match_the_spec_table() {
        // Spec §1: DLIO-computed totals, files per checkpoint, per-rank GiB.
        for (name, ranks, total_gib, files, min_gib, max_gib) in [
            ("8b", 8, 104.70, 16, 13.09, 13.09),
            ("70b", 64, 911.21, 128, 14.24, 14.24),
            ("405b", 512, 5292.25, 1544, 8.86, 12.32),
            ("1t", 1024, 15426.59, 2072, 12.91, 17.97),
        ] {
            let (s, p) = llama(name);
            let (total, n, min, max) = totals(&s, &p, ranks);
            assert_eq!((gib2(total), n, gib2(min), gib2(max)), (total_gib, files, min_gib, max_gib), "{name}");
        }
        // Exact bytes (regression guard for the arithmetic above).
        let (s, p) = llama("8b");
        assert_eq!(totals(&s, &p, 8).0, 112_425_623_552);
        let (s, p) = llama("405b");
        assert_eq!(totals(&s, &p, 512).0, 5_682_508_791_808);
    }

    #[test]
    fn per_rank_split_of_8b_is_model_plus_optimizer() {
        let (s, p) = llama("8b");
        let f = rank_files(&s, &p, 0);
        assert_eq!((gib2(f[0].bytes), gib2(f[1].bytes)), (1.87, 11.22));
    }

    #[test]
    fn layer_files_of_405b_and_1t_have_the_spec_sizes() {
        // Spec §2: 405B 797 MB per layer per TP rank, 525 MB embedding;
        // 1T 2.30 GB / 830 MB; optimizer 8.86 / 12.91 GiB.
        let mb = |b: u64| (b as f64 / 1e6).round();
        let (s, p) = llama("405b");
        let f = rank_files(&s, &p, 0);
        assert_eq!(f[0].name, "layer_0-model_0_model_states.pt");
        assert_eq!((mb(f[0].bytes), mb(f[1].bytes)), (525.0, 797.0));
        assert_eq!(f.last().unwrap().name, "zero_pp_rank_0_mp_rank_0_optim_states.pt");
        assert_eq!(gib2(f.last().unwrap().bytes), 8.86);
        // A DP-1 rank writes only its optimizer slice.
        let f = rank_files(&s, &p, 256 + 9);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].name, "zero_pp_rank_1_mp_rank_9_optim_states.pt");
        let (s, p) = llama("1t");
        let f = rank_files(&s, &p, 0);
        assert_eq!((mb(f[0].bytes), (mb(f[1].bytes) / 10.0).round() / 100.0), (830.0, 2.30));
        assert_eq!(gib2(f.last().unwrap().bytes), 12.91);
    }

    #[test]
    fn subset_mode_is_ranks_0_to_7_of_the_full_job() {
        // Spec §1: subset (8 ranks) totals.
        for (name, total_gib) in [("70b", 113.90), ("405b", 98.54), ("1t", 143.72)] {
            let (s, p) = llama(name);
            let (total, ..) = totals(&s, &p, 8);
            assert_eq!(gib2(total), total_gib, "{name}");
        }
    }

    #[test]
    fn pipeline_stages_cover_every_layer_once() {
        let (s, p) = llama("405b");
        let mut next = 0;
        for stage in 0..p.pp {
            let (a, b) = layer_range(&s, &p, stage);
            assert_eq!(a, next, "stage {stage}");
            next = b + 1;
        }
        assert_eq!(next, s.layers + 3);
    }

    #[test]
    fn without_zero_only_the_first_data_parallel_instance_writes() {
        let (s, _) = llama("8b");
        let p = Parallel { tp: 2, pp: 1, dp: 4, zero_stage: 0 };
        assert_eq!(rank_files(&s, &p, 1).len(), 2);
        assert!(rank_files(&s, &p, 2).is_empty());
    }
}
