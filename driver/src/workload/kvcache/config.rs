//! The `kvcache` workload's keys. The top-level keys mirror kv-cache.py's
//! command-line flags in snake_case (`users` is `--num-users`); the blocks
//! (`user_templates`, `qos_profiles`, `eviction`, `rag`, `decode`, …) are
//! the reference's `config.yaml` blocks under the same names. `kvcache`,
//! `gpu` and `trace` are mlpdrive's own blocks. docs/workloads/kvcache.md
//! lists every key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::models::{self, ModelSpec, Sizing};
use crate::config::{RunConfig, check_int_range, key_error, workload_config};
use crate::error::Error;
use crate::units::{ByteSize, Dur};

const GIB: f64 = (1u64 << 30) as f64;

/// Token generation timing after the I/O (spec §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GenerationMode {
    None,
    Fast,
    Realistic,
}

/// Which storage-health criteria the summary applies (spec §11.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PerformanceProfile {
    Latency,
    Throughput,
}

/// RAG chunk retrieval distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Retrieval {
    Zipfian,
    Uniform,
    Random,
}

/// The whole workload config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvConfig {
    /// Model key: a built-in model or one from `model_configs`.
    #[serde(default = "d_model")]
    pub model: String,
    /// `--num-users`: simulated users; workers = min(users, 500).
    #[serde(default = "d_users")]
    pub users: u32,
    /// Per-GPU tier size (GiB). Unset: no GPU tier, except in trace-only
    /// mode where it is 16 (as the reference's `--io-trace-log`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_mem_gb: Option<f64>,
    #[serde(default = "one")]
    pub num_gpus: u32,
    #[serde(default = "one")]
    pub tensor_parallel: u32,
    /// CPU tier size (GiB), real DRAM.
    #[serde(default = "d_cpu")]
    pub cpu_mem_gb: f64,
    #[serde(default = "d_gen_mode")]
    pub generation_mode: GenerationMode,
    #[serde(default = "d_profile")]
    pub performance_profile: PerformanceProfile,
    /// Stop after this many completed requests (0: no limit).
    #[serde(default)]
    pub max_requests: u64,
    /// Allocations (prefill writes) in progress at once (0: unlimited).
    #[serde(default)]
    pub max_concurrent_allocs: u32,
    /// Storage tier capacity (GiB); 0 = 95 % of the target's free space.
    #[serde(default)]
    pub storage_capacity_gb: f64,
    #[serde(default)]
    pub disable_multi_turn: bool,
    #[serde(default)]
    pub disable_prefix_caching: bool,
    #[serde(default)]
    pub enable_rag: bool,
    #[serde(default = "d_rag_docs")]
    pub rag_num_docs: u32,
    #[serde(default)]
    pub prefill_only: bool,
    #[serde(default)]
    pub decode_only: bool,
    /// Fill the cache before the measured window (spec §8).
    #[serde(default)]
    pub precondition: bool,
    /// GiB to write when preconditioning; 0 = 2 × the storage capacity.
    #[serde(default)]
    pub precondition_size_gb: f64,
    /// ShareGPT input (`--dataset-path`): requests from this JSON file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_path: Option<String>,
    /// ShareGPT conversations read (`--max-conversations`).
    #[serde(default = "d_max_conversations")]
    pub max_conversations: u32,
    /// ShareGPT requests per second (`--request-rate`); 0 = as the queue drains.
    #[serde(default)]
    pub request_rate: f64,
    /// BurstGPT input (`--use-burst-trace`) from `burst_trace_path`.
    #[serde(default)]
    pub use_burst_trace: bool,
    #[serde(default = "d_burst_path")]
    pub burst_trace_path: String,
    /// BurstGPT pacing divisor (`--trace-speedup`); 0 = no pacing.
    #[serde(default = "d_speedup")]
    pub trace_speedup: f64,
    /// Passes over the input (`--replay-cycles`); 0 = until the duration ends.
    #[serde(default)]
    pub replay_cycles: u32,
    /// Skip (and count) malformed BurstGPT rows instead of failing.
    #[serde(default)]
    pub skip_bad_rows: bool,

    #[serde(default)]
    pub user_templates: UserTemplates,
    #[serde(default)]
    pub qos_profiles: QosProfiles,
    #[serde(default)]
    pub qos_distribution: QosDistribution,
    #[serde(default)]
    pub eviction: Eviction,
    #[serde(default)]
    pub prefix_cache: PrefixCache,
    #[serde(default)]
    pub rag: Rag,
    #[serde(default)]
    pub conversation: Conversation,
    #[serde(default)]
    pub decode: Decode,
    #[serde(default)]
    pub generation_timing: GenerationTiming,
    /// Custom or overridden models.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub model_configs: BTreeMap<String, ModelSpec>,
    /// Blocks of the reference's config.yaml that mlpdrive accepts so the
    /// file loads, but that have no effect (a note in the results says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_backend: Option<serde_yaml_ng::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<serde_yaml_ng::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saturation_detection: Option<serde_yaml_ng::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_limits: Option<serde_yaml_ng::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharegpt: Option<serde_yaml_ng::Value>,

    /// mlpdrive's I/O settings.
    #[serde(default)]
    pub kvcache: IoSettings,
    /// The emulated GPU tier's cost model.
    #[serde(default)]
    pub gpu: TierModel,
    /// The CPU tier's cost model on a virtual clock (where a real copy
    /// would take no simulated time).
    #[serde(default = "d_cpu_model")]
    pub cpu: TierModel,
    /// Trace export.
    #[serde(default)]
    pub trace: TraceSettings,
}

fn d_model() -> String {
    "llama3.1-8b".into()
}
fn d_users() -> u32 {
    100
}
fn one() -> u32 {
    1
}
fn d_cpu() -> f64 {
    32.0
}
fn d_gen_mode() -> GenerationMode {
    GenerationMode::Realistic
}
fn d_profile() -> PerformanceProfile {
    PerformanceProfile::Latency
}
fn d_rag_docs() -> u32 {
    10
}
fn d_cpu_model() -> TierModel {
    TierModel { bandwidth_gbs: 8.0, latency_us: 1.0 }
}
fn d_max_conversations() -> u32 {
    500
}
fn d_burst_path() -> String {
    "BurstGPT/data/BurstGPT_1.csv".into()
}
fn d_speedup() -> f64 {
    1.0
}

/// One template's ranges (inclusive integer ranges; think time in seconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    pub context_range: [u64; 2],
    pub generation_range: [u64; 2],
    pub think_time_range: [f64; 2],
}

/// The three templates. A key left out keeps the reference's default for
/// that template, so `--set user_templates.coding.context_range=[…]` works.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "UserTemplateKeys")]
pub struct UserTemplates {
    pub chatbot: Template,
    pub coding: Template,
    pub document: Template,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateKeys {
    context_range: Option<[u64; 2]>,
    generation_range: Option<[u64; 2]>,
    think_time_range: Option<[f64; 2]>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserTemplateKeys {
    chatbot: Option<TemplateKeys>,
    coding: Option<TemplateKeys>,
    document: Option<TemplateKeys>,
}

impl TemplateKeys {
    fn over(self, d: Template) -> Template {
        Template {
            context_range: self.context_range.unwrap_or(d.context_range),
            generation_range: self.generation_range.unwrap_or(d.generation_range),
            think_time_range: self.think_time_range.unwrap_or(d.think_time_range),
        }
    }
}

impl From<UserTemplateKeys> for UserTemplates {
    fn from(k: UserTemplateKeys) -> UserTemplates {
        let d = UserTemplates::default();
        UserTemplates {
            chatbot: k.chatbot.map_or(d.chatbot.clone(), |t| t.over(d.chatbot)),
            coding: k.coding.map_or(d.coding.clone(), |t| t.over(d.coding)),
            document: k.document.map_or(d.document.clone(), |t| t.over(d.document)),
        }
    }
}

impl Default for UserTemplates {
    fn default() -> Self {
        UserTemplates {
            chatbot: Template { context_range: [512, 4096], generation_range: [50, 200], think_time_range: [0.1, 0.5] },
            coding: Template {
                context_range: [4096, 25000],
                generation_range: [100, 500],
                think_time_range: [0.2, 1.0],
            },
            document: Template {
                context_range: [4096, 16384],
                generation_range: [200, 800],
                think_time_range: [0.3, 1.5],
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QosProfile {
    pub target_latency_p95_ms: f64,
    #[serde(default)]
    pub target_latency_p99_ms: f64,
    #[serde(default)]
    pub target_latency_p999_ms: f64,
    #[serde(default)]
    pub target_latency_p9999_ms: f64,
    pub priority: u8,
}

/// The three QoS classes; keys left out keep the class's default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "QosProfileKeys")]
pub struct QosProfiles {
    pub interactive: QosProfile,
    pub responsive: QosProfile,
    pub batch: QosProfile,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QosKeys {
    target_latency_p95_ms: Option<f64>,
    target_latency_p99_ms: Option<f64>,
    target_latency_p999_ms: Option<f64>,
    target_latency_p9999_ms: Option<f64>,
    priority: Option<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QosProfileKeys {
    interactive: Option<QosKeys>,
    responsive: Option<QosKeys>,
    batch: Option<QosKeys>,
}

impl QosKeys {
    fn over(self, d: QosProfile) -> QosProfile {
        QosProfile {
            target_latency_p95_ms: self.target_latency_p95_ms.unwrap_or(d.target_latency_p95_ms),
            target_latency_p99_ms: self.target_latency_p99_ms.unwrap_or(d.target_latency_p99_ms),
            target_latency_p999_ms: self.target_latency_p999_ms.unwrap_or(d.target_latency_p999_ms),
            target_latency_p9999_ms: self.target_latency_p9999_ms.unwrap_or(d.target_latency_p9999_ms),
            priority: self.priority.unwrap_or(d.priority),
        }
    }
}

impl From<QosProfileKeys> for QosProfiles {
    fn from(k: QosProfileKeys) -> QosProfiles {
        let d = QosProfiles::default();
        QosProfiles {
            interactive: k.interactive.map_or(d.interactive.clone(), |q| q.over(d.interactive)),
            responsive: k.responsive.map_or(d.responsive.clone(), |q| q.over(d.responsive)),
            batch: k.batch.map_or(d.batch.clone(), |q| q.over(d.batch)),
        }
    }
}

fn qos(p95: f64, p99: f64, p999: f64, p9999: f64, priority: u8) -> QosProfile {
    QosProfile {
        target_latency_p95_ms: p95,
        target_latency_p99_ms: p99,
        target_latency_p999_ms: p999,
        target_latency_p9999_ms: p9999,
        priority,
    }
}

impl Default for QosProfiles {
    fn default() -> Self {
        QosProfiles {
            interactive: qos(50.0, 100.0, 150.0, 200.0, 3),
            responsive: qos(100.0, 200.0, 350.0, 500.0, 2),
            batch: qos(1000.0, 5000.0, 7500.0, 10000.0, 1),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QosDistribution {
    pub interactive_probability: f64,
    pub responsive_threshold: f64,
}

impl Default for QosDistribution {
    fn default() -> Self {
        QosDistribution { interactive_probability: 0.15, responsive_threshold: 0.50 }
    }
}

/// The waterfall's constants (spec §5.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Eviction {
    pub max_recursion_depth: u32,
    pub target_usage_ratio: f64,
    pub large_entry_limit_ratio: f64,
    pub max_evictions_hard_cap: u32,
    pub max_evictions_min: u32,
}

impl Default for Eviction {
    fn default() -> Self {
        Eviction {
            max_recursion_depth: 10,
            target_usage_ratio: 0.8,
            large_entry_limit_ratio: 0.95,
            max_evictions_hard_cap: 5000,
            max_evictions_min: 1000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrefixCache {
    /// Read by the reference but unused; accepted, no effect (noted).
    pub min_prefix_length: u64,
    /// Read by the reference but unused; accepted, no effect (noted).
    pub max_prefix_entries: u64,
    pub system_prompt_hit_probability: f64,
}

impl Default for PrefixCache {
    fn default() -> Self {
        PrefixCache { min_prefix_length: 50, max_prefix_entries: 1000, system_prompt_hit_probability: 0.2 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rag {
    pub chunk_size_tokens: u64,
    pub top_k_chunks: u32,
    pub max_chunk_bytes: u64,
    pub request_probability: f64,
    pub retrieval_distribution: Retrieval,
    /// Keep at most this many documents (0: all); older ones are deleted
    /// from the cache (the reference's version of this is broken).
    pub max_documents: u32,
    pub large_model_doc_tokens_min: u64,
    pub large_model_doc_tokens_max: u64,
    pub small_model_doc_tokens_min: u64,
    pub small_model_doc_tokens_max: u64,
}

impl Default for Rag {
    fn default() -> Self {
        Rag {
            chunk_size_tokens: 512,
            top_k_chunks: 5,
            max_chunk_bytes: 256 << 20,
            request_probability: 0.1,
            retrieval_distribution: Retrieval::Zipfian,
            max_documents: 0,
            large_model_doc_tokens_min: 1024,
            large_model_doc_tokens_max: 4096,
            small_model_doc_tokens_min: 4000,
            small_model_doc_tokens_max: 12000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Conversation {
    pub max_conversations: u32,
    pub max_turns_per_conv: u32,
    /// Honoured (the reference hard-codes 0.2 and ignores the key).
    pub end_conversation_probability: f64,
}

impl Default for Conversation {
    fn default() -> Self {
        Conversation { max_conversations: 1000, max_turns_per_conv: 50, end_conversation_probability: 0.2 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Decode {
    pub batch_size: u64,
}

impl Default for Decode {
    fn default() -> Self {
        Decode { batch_size: 32 }
    }
}

/// Seconds per generated token per mode. Honoured (the reference ignores
/// this block and hard-codes the same values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenerationTiming {
    pub none: f64,
    pub fast: f64,
    pub realistic: f64,
}

impl Default for GenerationTiming {
    fn default() -> Self {
        GenerationTiming { none: 0.0, fast: 0.002, realistic: 0.030 }
    }
}

/// How the storage tier is driven.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IoSettings {
    /// Bytes per storage I/O (entries are written and read in chunks).
    pub io_size: ByteSize,
    /// Storage I/Os in flight in total.
    pub queue_depth: u32,
    /// Storage I/Os in flight per entry transfer.
    pub entry_queue_depth: u32,
    /// Frame storage entries like the reference's `.npy` files (128 more
    /// bytes per entry).
    pub npy_header: bool,
    /// After `duration`, requests already being processed may finish for
    /// this long (reported separately as late work); then the run ends.
    pub drain_timeout: Dur,
}

impl Default for IoSettings {
    fn default() -> Self {
        IoSettings {
            io_size: ByteSize::mib(1),
            queue_depth: 64,
            entry_queue_depth: 8,
            npy_header: true,
            drain_timeout: Dur::secs(60),
        }
    }
}

/// A modelled tier (the GPU tier; the CPU tier on a virtual clock): an
/// access costs `latency_us + bytes / bandwidth`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TierModel {
    /// GiB/s.
    pub bandwidth_gbs: f64,
    pub latency_us: f64,
}

impl Default for TierModel {
    fn default() -> Self {
        TierModel { bandwidth_gbs: 64.0, latency_us: 10.0 }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceSettings {
    /// Write the reference's I/O trace CSV here (`.zst`: zstd-compressed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Trace-only mode: no real I/O, logical time (like `--io-trace-log`).
    pub only: bool,
    /// Also write `Delete` rows for terminal evictions (mlpdrive extension).
    pub deletes: bool,
}

/// Users above this many share 500 workers (spec §1).
pub const MAX_WORKERS: u32 = 500;

impl KvConfig {
    /// Deserializes and validates the workload keys.
    pub fn from_run_config(cfg: &RunConfig) -> Result<KvConfig, Error> {
        let kv: KvConfig = workload_config(cfg)?;
        kv.validate()?;
        let input_ends = kv.replay_cycles > 0 && (kv.use_burst_trace || kv.dataset_path.is_some());
        if cfg.common.duration.is_none() && kv.max_requests == 0 && !input_ends {
            return Err(Error::usage(
                "workload kvcache needs a way to stop: set `duration` (like --duration 60s), \
                 `max_requests` (like --set max_requests=100), or with a BurstGPT/ShareGPT input \
                 `replay_cycles` (like --set replay_cycles=1)",
            ));
        }
        Ok(kv)
    }

    /// Checks values serde cannot (ranges, cross-key rules), with the
    /// reference's limits where it has them.
    pub fn validate(&self) -> Result<(), Error> {
        self.model_spec()?;
        check_int_range("users", self.users.into(), 1, 100_000)?;
        check_int_range("num_gpus", self.num_gpus.into(), 1, 1024)?;
        check_int_range("tensor_parallel", self.tensor_parallel.into(), 1, self.num_gpus.into()).map_err(|_| {
            key_error(
                "tensor_parallel",
                format!("must be between 1 and num_gpus ({}), got {}", self.num_gpus, self.tensor_parallel),
            )
        })?;
        let gib = |key: &str, v: f64, max: f64| {
            if !(0.0..=max).contains(&v) || v.is_nan() {
                Err(key_error(key, format!("expected GiB between 0 and {max}, got {v}")))
            } else {
                Ok(())
            }
        };
        gib("gpu_mem_gb", self.gpu_mem_gb.unwrap_or(0.0), 65_536.0)?;
        gib("cpu_mem_gb", self.cpu_mem_gb, 131_072.0)?;
        gib("storage_capacity_gb", self.storage_capacity_gb, 1e9)?;
        gib("precondition_size_gb", self.precondition_size_gb, 1e9)?;
        if self.prefill_only && self.decode_only {
            return Err(key_error("decode_only", "prefill_only and decode_only are mutually exclusive; set one"));
        }
        if self.use_burst_trace && self.dataset_path.is_some() {
            return Err(key_error(
                "dataset_path",
                "use either BurstGPT (use_burst_trace) or ShareGPT (dataset_path), not both",
            ));
        }
        if !(self.trace_speedup >= 0.0 && self.trace_speedup.is_finite()) {
            return Err(key_error(
                "trace_speedup",
                format!("expected a number ≥ 0 (0: no pacing), got {}", self.trace_speedup),
            ));
        }
        if !(self.request_rate >= 0.0 && self.request_rate.is_finite()) {
            return Err(key_error(
                "request_rate",
                format!("expected requests per second ≥ 0, got {}", self.request_rate),
            ));
        }
        check_int_range("max_conversations", self.max_conversations.into(), 1, 100_000_000)?;
        for (name, t) in [
            ("chatbot", &self.user_templates.chatbot),
            ("coding", &self.user_templates.coding),
            ("document", &self.user_templates.document),
        ] {
            let k = |f: &str| format!("user_templates.{name}.{f}");
            if t.context_range[0] == 0 || t.context_range[0] > t.context_range[1] {
                return Err(key_error(&k("context_range"), "expected [min, max] with 1 ≤ min ≤ max"));
            }
            if t.generation_range[0] == 0 || t.generation_range[0] > t.generation_range[1] {
                return Err(key_error(&k("generation_range"), "expected [min, max] with 1 ≤ min ≤ max"));
            }
            if !(t.think_time_range[0] >= 0.0 && t.think_time_range[0] <= t.think_time_range[1]) {
                return Err(key_error(&k("think_time_range"), "expected [min, max] seconds with 0 ≤ min ≤ max"));
            }
        }
        let prob = |key: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(key_error(key, format!("expected a probability from 0 to 1, got {v}")))
            }
        };
        prob("qos_distribution.interactive_probability", self.qos_distribution.interactive_probability)?;
        prob("qos_distribution.responsive_threshold", self.qos_distribution.responsive_threshold)?;
        prob("prefix_cache.system_prompt_hit_probability", self.prefix_cache.system_prompt_hit_probability)?;
        prob("rag.request_probability", self.rag.request_probability)?;
        prob("conversation.end_conversation_probability", self.conversation.end_conversation_probability)?;
        prob("eviction.target_usage_ratio", self.eviction.target_usage_ratio)?;
        prob("eviction.large_entry_limit_ratio", self.eviction.large_entry_limit_ratio)?;
        if self.decode.batch_size == 0 {
            return Err(key_error("decode.batch_size", "expected an integer ≥ 1, got 0"));
        }
        if self.rag.chunk_size_tokens == 0 || self.rag.top_k_chunks == 0 {
            return Err(key_error("rag", "chunk_size_tokens and top_k_chunks must be ≥ 1"));
        }
        if self.rag.small_model_doc_tokens_min > self.rag.small_model_doc_tokens_max
            || self.rag.large_model_doc_tokens_min > self.rag.large_model_doc_tokens_max
            || self.rag.small_model_doc_tokens_min == 0
            || self.rag.large_model_doc_tokens_min == 0
        {
            return Err(key_error("rag", "document token ranges need 1 ≤ min ≤ max"));
        }
        if self.conversation.max_conversations == 0 {
            return Err(key_error("conversation.max_conversations", "expected an integer ≥ 1, got 0"));
        }
        let io = self.kvcache.io_size.bytes();
        if io < 4096 || !io.is_multiple_of(4096) || io > (64 << 20) {
            return Err(key_error("kvcache.io_size", "expected a multiple of 4KiB from 4KiB to 64MiB, like 1MiB"));
        }
        check_int_range("kvcache.queue_depth", self.kvcache.queue_depth.into(), 1, 4096)?;
        check_int_range("kvcache.entry_queue_depth", self.kvcache.entry_queue_depth.into(), 1, 4096)?;
        if self.cpu.bandwidth_gbs.is_nan()
            || self.cpu.bandwidth_gbs <= 0.0
            || self.cpu.latency_us.is_nan()
            || self.cpu.latency_us < 0.0
        {
            return Err(key_error("cpu", "bandwidth_gbs must be > 0 and latency_us ≥ 0"));
        }
        if self.gpu.bandwidth_gbs.is_nan()
            || self.gpu.bandwidth_gbs <= 0.0
            || self.gpu.latency_us.is_nan()
            || self.gpu.latency_us < 0.0
        {
            return Err(key_error("gpu", "bandwidth_gbs must be > 0 and latency_us ≥ 0"));
        }
        for (key, t) in [
            ("generation_timing.none", self.generation_timing.none),
            ("generation_timing.fast", self.generation_timing.fast),
            ("generation_timing.realistic", self.generation_timing.realistic),
        ] {
            if !(0.0..=10.0).contains(&t) {
                return Err(key_error(key, format!("expected seconds per token from 0 to 10, got {t}")));
            }
        }
        if let Some(path) = &self.trace.path {
            let p = std::path::Path::new(path);
            let parent = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
            if !parent.is_dir() {
                return Err(key_error(
                    "trace.path",
                    format!("directory {} does not exist; create it first", parent.display()),
                ));
            }
            if p.is_dir() {
                return Err(key_error(
                    "trace.path",
                    format!("{path} is a directory; give a file like kv.csv or kv.csv.zst"),
                ));
            }
        }
        if self.trace.only && self.trace.path.is_none() {
            return Err(key_error(
                "trace.only",
                "trace-only mode needs `trace.path` (like --set trace.path=kv.csv.zst)",
            ));
        }
        Ok(())
    }

    /// The model named by `model` (`model_configs` first, then built-ins).
    pub fn model_spec(&self) -> Result<ModelSpec, Error> {
        if let Some(m) = self.model_configs.get(&self.model) {
            return Ok(m.clone());
        }
        models::builtin(&self.model).ok_or_else(|| {
            let mut known: Vec<String> = models::BUILTIN_MODELS.iter().map(|s| (*s).to_string()).collect();
            known.extend(self.model_configs.keys().cloned());
            key_error("model", format!("unknown model '{}'; known: {}", self.model, known.join(", ")))
        })
    }

    pub fn sizing(&self) -> Sizing {
        let bpt = self.model_spec().map(|m| m.bytes_per_token()).unwrap_or(1);
        Sizing {
            bytes_per_token: bpt,
            tensor_parallel: self.tensor_parallel.into(),
            npy_header: self.kvcache.npy_header,
        }
    }

    pub fn workers(&self) -> u32 {
        self.users.min(MAX_WORKERS)
    }

    /// GPU tier bytes: `gpu_mem_gb × num_gpus` (16 GiB per GPU in trace-only
    /// mode when unset, none otherwise).
    pub fn gpu_bytes(&self) -> u64 {
        let per = self.gpu_mem_gb.unwrap_or(if self.trace.only { 16.0 } else { 0.0 });
        (per * f64::from(self.num_gpus) * GIB) as u64
    }

    pub fn cpu_bytes(&self) -> u64 {
        (self.cpu_mem_gb * GIB) as u64
    }

    pub fn seconds_per_token(&self) -> f64 {
        match self.generation_mode {
            GenerationMode::None => self.generation_timing.none,
            GenerationMode::Fast => self.generation_timing.fast,
            GenerationMode::Realistic => self.generation_timing.realistic,
        }
    }

    /// Notes for the results about accepted keys that do nothing.
    pub fn inert_key_notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for (key, set) in [
            ("gpu_backend", self.gpu_backend.is_some()),
            ("autoscaler", self.autoscaler.is_some()),
            ("saturation_detection", self.saturation_detection.is_some()),
            ("validation_limits", self.validation_limits.is_some()),
            ("sharegpt", self.sharegpt.is_some()),
        ] {
            if set {
                notes.push(format!("config block `{key}` is accepted for compatibility with kv-cache.py's config.yaml but has no effect in mlpdrive"));
            }
        }
        if !self.tensor_parallel.is_power_of_two() {
            notes.push(format!(
                "tensor_parallel {} is not a power of 2 (kv-cache.py warns about this too)",
                self.tensor_parallel
            ));
        }
        let pc = PrefixCache::default();
        if self.prefix_cache.min_prefix_length != pc.min_prefix_length
            || self.prefix_cache.max_prefix_entries != pc.max_prefix_entries
        {
            notes.push(
                "prefix_cache.min_prefix_length and max_prefix_entries have no effect (as in kv-cache.py)".into(),
            );
        }
        notes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<KvConfig, Error> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.yaml");
        std::fs::write(&path, yaml).unwrap();
        let cfg = crate::config::load(path.to_str().unwrap(), &[], None, None)?;
        KvConfig::from_run_config(&cfg)
    }

    #[test]
    fn defaults_mirror_the_reference_flags() {
        let kv = load("workload: kvcache\nduration: 10s\n").unwrap();
        assert_eq!(kv.model, "llama3.1-8b");
        assert_eq!(kv.users, 100);
        assert_eq!(kv.cpu_mem_gb, 32.0);
        assert_eq!(kv.generation_mode, GenerationMode::Realistic);
        assert_eq!(kv.decode.batch_size, 32);
        assert_eq!(kv.eviction, Eviction::default());
        assert_eq!(kv.gpu_bytes(), 0, "no GPU tier in real mode by default");
        let mut t = kv.clone();
        t.trace.only = true;
        t.num_gpus = 2;
        assert_eq!(t.gpu_bytes(), 32 << 30, "trace-only: 16 GiB per GPU unless set, as --io-trace-log");
        assert_eq!(kv.workers(), 100);
        assert_eq!(kv.sizing().bytes_per_token, 131_072);
    }

    #[test]
    fn reference_blocks_and_bad_values_are_checked() {
        let kv = load(
            "workload: kvcache\nduration: 1s\nuser_templates:\n  chatbot: {context_range: [10, 20], generation_range: [1, 2], think_time_range: [0.1, 0.2]}\n  coding: {context_range: [10, 20], generation_range: [1, 2], think_time_range: [0.1, 0.2]}\n  document: {context_range: [10, 20], generation_range: [1, 2], think_time_range: [0.1, 0.2]}\nmodel_configs:\n  mine: {num_layers: 2, kv_heads: 1, hidden_dim: 64, num_heads: 1}\nmodel: mine\n",
        )
        .unwrap();
        assert_eq!(kv.sizing().bytes_per_token, 2 * 64 * 2 * 2);
        let e = load("workload: kvcache\nduration: 1s\nmodel: gpt-9\n").unwrap_err().to_string();
        assert!(e.contains("unknown model 'gpt-9'") && e.contains("llama3.1-8b"), "{e}");
        let e = load("workload: kvcache\nduration: 1s\nusers: 0\n").unwrap_err().to_string();
        assert!(e.contains("`users`"), "{e}");
        let e =
            load("workload: kvcache\nduration: 1s\nprefill_only: true\ndecode_only: true\n").unwrap_err().to_string();
        assert!(e.contains("mutually exclusive"), "{e}");
        let e = load("workload: kvcache\nduration: 1s\ntensor_parallel: 2\n").unwrap_err().to_string();
        assert!(e.contains("tensor_parallel"), "{e}");
        let e = load("workload: kvcache\nduration: 1s\neviction: {target_usage_ratio: 2}\n").unwrap_err().to_string();
        assert!(e.contains("eviction.target_usage_ratio"), "{e}");
        let e = load("workload: kvcache\nduration: 1s\nnum_users: 3\n").unwrap_err().to_string();
        assert!(e.contains("num_users"), "{e}");
        let kv = load("workload: kvcache\nduration: 1s\nuser_templates: {coding: {context_range: [5, 6]}}\nqos_profiles: {batch: {priority: 0}}\n").unwrap();
        assert_eq!(kv.user_templates.coding.context_range, [5, 6]);
        assert_eq!(kv.user_templates.coding.generation_range, [100, 500], "other keys keep their defaults");
        assert_eq!(kv.user_templates.chatbot, UserTemplates::default().chatbot);
        assert_eq!((kv.qos_profiles.batch.priority, kv.qos_profiles.batch.target_latency_p95_ms), (0, 1000.0));
        let e = load("workload: kvcache\nduration: 1s\nuser_templates: {coding: {contxt_range: [5, 6]}}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("contxt_range"), "{e}");
        let e = load("workload: kvcache\n").unwrap_err().to_string();
        assert!(e.contains("needs a way to stop"), "{e}");
        let e = load("workload: kvcache\nduration: 1s\ndataset_path: x.json\nuse_burst_trace: true\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not both"), "{e}");
    }
}
