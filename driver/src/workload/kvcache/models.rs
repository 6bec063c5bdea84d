//! The model table (spec §2): per-token KV bytes for the built-in models,
//! custom models from the `model_configs` block, and entry sizes with tensor
//! parallelism and the optional 128-byte `.npy` header.

use serde::{Deserialize, Serialize};

/// Size of the NumPy v1.0 header the reference writes in front of every
/// storage entry.
pub const NPY_HEADER_BYTES: u64 = 128;

/// How a model stores its KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Attention {
    /// Multi-head attention: K and V per KV head.
    Mha,
    /// Grouped-query attention: the same formula as MHA with fewer KV heads.
    Gqa,
    /// Multi-head latent attention (DeepSeek): one compressed latent plus a
    /// decoupled RoPE key per layer, no ×2.
    Mla,
}

/// One model's shape, as the built-in table and `model_configs` give it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    #[serde(default)]
    pub name: String,
    #[serde(default = "d_layers")]
    pub num_layers: u64,
    #[serde(default = "d_hidden")]
    pub hidden_dim: u64,
    #[serde(default = "d_heads")]
    pub num_heads: u64,
    #[serde(default = "d_kv_heads")]
    pub kv_heads: u64,
    #[serde(default = "d_dtype")]
    pub dtype: String,
    /// Overrides `hidden_dim / num_heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_dim_per_head: Option<u64>,
    #[serde(default = "d_attention")]
    pub attention_type: Attention,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_lora_rank: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qk_rope_head_dim: Option<u64>,
}

fn d_layers() -> u64 {
    32
}
fn d_hidden() -> u64 {
    4096
}
fn d_heads() -> u64 {
    32
}
fn d_kv_heads() -> u64 {
    8
}
fn d_dtype() -> String {
    "float16".into()
}
fn d_attention() -> Attention {
    Attention::Mha
}

/// Bytes of one element of `dtype`: float32 4, float16/bfloat16 2, int8 1,
/// anything else 2 (as the reference).
pub fn dtype_bytes(dtype: &str) -> u64 {
    match dtype {
        "float32" => 4,
        "float16" | "bfloat16" => 2,
        "int8" => 1,
        _ => 2,
    }
}

impl ModelSpec {
    /// Per-attention-head dimension.
    pub fn head_dim(&self) -> u64 {
        self.kv_dim_per_head.unwrap_or(self.hidden_dim / self.num_heads.max(1))
    }

    /// KV bytes per token (spec §2): MHA/GQA `layers × kv_heads × head_dim
    /// × 2 × dtype`; MLA `layers × (kv_lora_rank + qk_rope_head_dim) × dtype`.
    pub fn bytes_per_token(&self) -> u64 {
        let dt = dtype_bytes(&self.dtype);
        match self.attention_type {
            Attention::Mla => {
                self.num_layers * (self.kv_lora_rank.unwrap_or(512) + self.qk_rope_head_dim.unwrap_or(64)) * dt
            }
            Attention::Mha | Attention::Gqa => self.num_layers * self.kv_heads * self.head_dim() * 2 * dt,
        }
    }

    /// "Large" models get smaller RAG documents (spec §6): hidden ≥ 8192 or
    /// ≥ 64 layers.
    pub fn is_large(&self) -> bool {
        self.hidden_dim >= 8192 || self.num_layers >= 64
    }
}

#[allow(clippy::too_many_arguments)]
fn spec(name: &str, layers: u64, hidden: u64, heads: u64, kv: u64, head_dim: Option<u64>) -> ModelSpec {
    ModelSpec {
        name: name.into(),
        num_layers: layers,
        hidden_dim: hidden,
        num_heads: heads,
        kv_heads: kv,
        dtype: "float16".into(),
        kv_dim_per_head: head_dim,
        attention_type: if kv == heads { Attention::Mha } else { Attention::Gqa },
        kv_lora_rank: None,
        qk_rope_head_dim: None,
    }
}

/// Keys of the built-in models, in the spec's order.
pub const BUILTIN_MODELS: &[&str] = &[
    "tiny-1b",
    "mistral-7b",
    "llama2-7b",
    "llama3.1-8b",
    "llama3.1-70b-instruct",
    "deepseek-v3",
    "qwen3-32b",
    "gpt-oss-120b",
    "gpt-oss-20b",
];

/// The built-in model `key`, if there is one.
pub fn builtin(key: &str) -> Option<ModelSpec> {
    Some(match key {
        "tiny-1b" => spec("Tiny 1B", 12, 1024, 8, 4, None),
        "mistral-7b" => spec("Mistral 7B", 32, 4096, 32, 8, None),
        "llama2-7b" => spec("Llama 2 7B", 32, 4096, 32, 32, None),
        "llama3.1-8b" => spec("Llama 3.1 8B", 32, 4096, 32, 8, None),
        "llama3.1-70b-instruct" => spec("Llama 3.1 70B Instruct", 80, 8192, 64, 8, None),
        "deepseek-v3" => ModelSpec {
            attention_type: Attention::Mla,
            kv_lora_rank: Some(512),
            qk_rope_head_dim: Some(64),
            ..spec("DeepSeek V3", 61, 7168, 128, 128, None)
        },
        "qwen3-32b" => spec("Qwen3 32B", 64, 5120, 64, 8, Some(128)),
        "gpt-oss-120b" => spec("GPT OSS 120B (MoE)", 36, 2880, 64, 8, Some(64)),
        "gpt-oss-20b" => spec("GPT OSS 20B (MoE)", 24, 2880, 64, 8, Some(64)),
        _ => return None,
    })
}

/// How entries are sized on this run: per-token bytes, the tensor-parallel
/// divisor and the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizing {
    pub bytes_per_token: u64,
    pub tensor_parallel: u64,
    pub npy_header: bool,
}

impl Sizing {
    /// The KV payload of an entry of `tokens` tokens for one rank:
    /// `tokens × bytes_per_token ÷ TP` (integer division, as the reference's
    /// trace mode).
    pub fn payload_bytes(&self, tokens: u64) -> u64 {
        tokens * self.bytes_per_token / self.tensor_parallel.max(1)
    }

    /// Bytes of the stored object: the payload plus the 128-byte `.npy`
    /// header when enabled. This is the size every tier accounts.
    pub fn entry_bytes(&self, tokens: u64) -> u64 {
        self.payload_bytes(tokens) + if self.npy_header { NPY_HEADER_BYTES } else { 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_per_token_of_every_builtin_model_matches_the_spec_table() {
        let expect = [
            ("tiny-1b", 24_576),
            ("mistral-7b", 131_072),
            ("llama2-7b", 524_288),
            ("llama3.1-8b", 131_072),
            ("llama3.1-70b-instruct", 327_680),
            ("deepseek-v3", 70_272),
            ("qwen3-32b", 262_144),
            ("gpt-oss-120b", 73_728),
            ("gpt-oss-20b", 49_152),
        ];
        assert_eq!(expect.len(), BUILTIN_MODELS.len());
        for (key, bpt) in expect {
            let m = builtin(key).unwrap_or_else(|| panic!("{key} missing"));
            assert_eq!(m.bytes_per_token(), bpt, "{key}");
        }
        assert!(builtin("gpt-5").is_none());
    }

    #[test]
    fn dtype_bytes_and_custom_defaults() {
        assert_eq!(dtype_bytes("float32"), 4);
        assert_eq!(dtype_bytes("bfloat16"), 2);
        assert_eq!(dtype_bytes("int8"), 1);
        assert_eq!(dtype_bytes("fp8"), 2);
        let m: ModelSpec = serde_yaml_ng::from_str("name: x").unwrap();
        // 32 layers × 8 kv heads × 128 × 2 × 2
        assert_eq!(m.bytes_per_token(), 131_072);
        let mla: ModelSpec = serde_yaml_ng::from_str(
            "num_layers: 10\nattention_type: mla\nkv_lora_rank: 100\nqk_rope_head_dim: 28\ndtype: float32",
        )
        .unwrap();
        assert_eq!(mla.bytes_per_token(), 10 * 128 * 4);
    }

    #[test]
    fn entry_sizes_with_tensor_parallel_and_header() {
        let bpt = builtin("llama3.1-70b-instruct").unwrap().bytes_per_token();
        let s1 = Sizing { bytes_per_token: bpt, tensor_parallel: 1, npy_header: true };
        let s2 = Sizing { bytes_per_token: bpt, tensor_parallel: 2, npy_header: true };
        let s3 = Sizing { bytes_per_token: 131_072, tensor_parallel: 3, npy_header: false };
        assert_eq!(s1.entry_bytes(2048), 2048 * 327_680 + 128);
        assert_eq!(s2.entry_bytes(2048), 2048 * 327_680 / 2 + 128);
        assert_eq!(s2.payload_bytes(3019), 3019 * 327_680 / 2);
        assert_eq!(s3.entry_bytes(1001), 1001 * 131_072 / 3);
        // 2,048 tokens of llama3.1-8b = 256 MiB.
        let s = Sizing { bytes_per_token: 131_072, tensor_parallel: 1, npy_header: false };
        assert_eq!(s.entry_bytes(2048), 256 << 20);
    }
}
