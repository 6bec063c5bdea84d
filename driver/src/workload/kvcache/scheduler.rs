//! Request generation (spec §3.2, §6): open-loop arrivals with think time,
//! multi-turn conversations, the prefill-only rule, prefix-cache and RAG
//! draws. Every draw comes from the user's own seeded stream and every id
//! from counters, so the key sequence depends on the seed only (the
//! reference puts the wall-clock time into conversation ids, §16 item 14).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::config::{KvConfig, Retrieval};
use super::models::ModelSpec;
use super::rng::Stream;
use super::users::{QosClass, UserProfile};

/// Requests with at least this many context tokens only write (no decode).
pub const PREFILL_ONLY_TOKENS: u64 = 10_000;

/// The three system prompts of the prefix cache (spec §6).
pub const SYSTEM_PROMPTS: [&str; 3] = [
    "You are a helpful assistant.",
    "You are an AI assistant helping with coding tasks.",
    "You are a professional writing assistant.",
];

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReqPhase {
    /// Write only (context ≥ 10,000 tokens).
    Prefill,
    PrefillDecode,
    /// Read only (RAG side-requests).
    Decode,
}

impl ReqPhase {
    pub fn for_context(tokens: u64) -> ReqPhase {
        if tokens >= PREFILL_ONLY_TOKENS { ReqPhase::Prefill } else { ReqPhase::PrefillDecode }
    }
}

/// One queued request.
#[derive(Debug, Clone)]
pub struct KvRequest {
    pub user: u32,
    pub request_id: String,
    pub key: String,
    pub context_tokens: u64,
    pub gen_tokens: u64,
    pub phase: ReqPhase,
    pub qos: QosClass,
    pub priority: u8,
    /// Arrival time (queue wait counts in the end-to-end latency).
    pub submit: Instant,
    pub conv: Option<u64>,
    pub turn: u32,
    /// Index into [`SYSTEM_PROMPTS`] if this request has a system prompt.
    pub prefix_prompt: Option<usize>,
    /// Also read a random document's top-k chunks (spec §4 step 4).
    pub rag_read: bool,
}

/// The key and token count of a system prompt's prefix entry.
pub fn system_prompt_entry(i: usize) -> (String, u64) {
    let prompt = SYSTEM_PROMPTS[i];
    let ntok = prompt.split_whitespace().count() as u64;
    let h = xxhash_rust::xxh3::xxh3_64(format!("{prompt}_{ntok}").as_bytes());
    (format!("kv_system_{h:016x}"), ntok)
}

/// A user's live state.
pub struct UserState {
    pub profile: UserProfile,
    arrivals: Stream,
    /// Draws made when a request starts (RAG picks, decode-only keys).
    pub exec: Stream,
    conv: Option<(u64, u32)>,
    conv_seq: u64,
}

impl UserState {
    pub fn new(profile: UserProfile, seed: u64, index: u32) -> UserState {
        UserState {
            profile,
            arrivals: Stream::new(seed, "user-arrivals", u64::from(index)),
            exec: Stream::new(seed, "user-exec", u64::from(index)),
            conv: None,
            conv_seq: 0,
        }
    }

    /// Think time before the next request: `think × U(0.8, 1.2)`.
    pub fn think(&mut self) -> Duration {
        Duration::from_secs_f64(self.profile.think_time_s * self.arrivals.float_in(0.8, 1.2))
    }
}

/// Registered conversations and the keys each has issued (spec §3.2).
#[derive(Default)]
pub struct Conversations {
    keys: BTreeMap<u64, (String, Vec<String>)>,
    by_name: BTreeMap<String, u64>,
    order: VecDeque<u64>,
    next_id: u64,
}

impl Conversations {
    /// Every key the conversation has issued, except `own`.
    pub fn other_keys(&self, conv: u64, own: &str) -> Option<Vec<String>> {
        self.keys.get(&conv).map(|(_, ks)| ks.iter().filter(|k| *k != own).cloned().collect())
    }

    fn start(&mut self, name: String, max: u32) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.keys.insert(id, (name, Vec::new()));
        self.order.push_back(id);
        while self.order.len() > max as usize {
            if let Some(old) = self.order.pop_front()
                && let Some((name, _)) = self.keys.remove(&old)
            {
                self.by_name.remove(&name);
            }
        }
        id
    }

    /// The conversation named `name` (registered on first use), for
    /// inputs whose conversations have their own ids.
    pub fn named(&mut self, name: &str, max: u32) -> u64 {
        if let Some(&id) = self.by_name.get(name)
            && self.keys.contains_key(&id)
        {
            return id;
        }
        let id = self.start(name.to_string(), max);
        self.by_name.insert(name.to_string(), id);
        id
    }

    /// Adds `key` to the conversation unless it is already there (inputs
    /// replayed in several passes repeat their keys).
    pub fn push_unique(&mut self, id: u64, key: &str) {
        if let Some((_, ks)) = self.keys.get_mut(&id)
            && !ks.iter().any(|k| k == key)
        {
            ks.push(key.to_string());
        }
    }

    fn name(&self, id: u64) -> Option<&str> {
        self.keys.get(&id).map(|(n, _)| n.as_str())
    }

    fn push(&mut self, id: u64, key: String) {
        if let Some((_, ks)) = self.keys.get_mut(&id) {
            ks.push(key);
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// One RAG document: its chunks (key, tokens).
#[derive(Debug, Clone)]
pub struct Doc {
    pub id: String,
    pub chunks: Vec<(String, u64)>,
}

/// Splits `doc_tokens` into chunks of `chunk_tokens`, smaller if a chunk
/// would exceed `max_chunk_bytes`.
pub fn make_doc(i: u32, doc_tokens: u64, chunk_tokens: u64, max_chunk_bytes: u64, bytes_per_token: u64) -> Doc {
    let by_bytes = (max_chunk_bytes / bytes_per_token.max(1)).max(1);
    let per = chunk_tokens.min(by_bytes).max(1);
    let id = format!("doc_{i:04}");
    let mut chunks = Vec::new();
    let mut left = doc_tokens;
    let mut n = 0;
    while left > 0 {
        let t = per.min(left);
        chunks.push((format!("rag_{id}_chunk_{n}"), t));
        left -= t;
        n += 1;
    }
    Doc { id, chunks }
}

/// Tokens of document `i` (spec §6: large models 1,024–4,096, else
/// 4,000–12,000).
pub fn doc_tokens(cfg: &KvConfig, model: &ModelSpec, rng: &mut Stream) -> u64 {
    if model.is_large() {
        rng.int_in(cfg.rag.large_model_doc_tokens_min, cfg.rag.large_model_doc_tokens_max)
    } else {
        rng.int_in(cfg.rag.small_model_doc_tokens_min, cfg.rag.small_model_doc_tokens_max)
    }
}

/// `k` distinct chunk indexes of `n`, zipfian (P ∝ 1/(i+1)) or uniform.
pub fn top_k(n: usize, k: usize, dist: Retrieval, rng: &mut Stream) -> Vec<usize> {
    let mut left: Vec<usize> = (0..n).collect();
    let mut out = Vec::new();
    while out.len() < k.min(n) {
        let pick = match dist {
            Retrieval::Zipfian => {
                let total: f64 = left.iter().map(|&i| 1.0 / (i + 1) as f64).sum();
                let mut r = rng.unit() * total;
                let mut at = left.len() - 1;
                for (j, &i) in left.iter().enumerate() {
                    r -= 1.0 / (i + 1) as f64;
                    if r < 0.0 {
                        at = j;
                        break;
                    }
                }
                at
            }
            Retrieval::Uniform | Retrieval::Random => rng.below(left.len() as u64) as usize,
        };
        out.push(left.remove(pick));
    }
    out
}

/// Builds requests from arrivals.
pub struct Generator {
    pub conversations: Conversations,
    req_counter: u64,
    rag_counter: u64,
}

impl Generator {
    pub fn new() -> Generator {
        Generator { conversations: Conversations::default(), req_counter: 0, rag_counter: 0 }
    }

    /// The requests of one arrival of `user` at `at`: the request itself
    /// and, with RAG, maybe a side-request for a document.
    pub fn arrival(
        &mut self,
        cfg: &KvConfig,
        u: &mut UserState,
        index: u32,
        at: Instant,
        docs: &[Doc],
    ) -> Vec<KvRequest> {
        let rng = &mut u.arrivals;
        let multi_turn = !cfg.disable_multi_turn;
        let mut conv = None;
        let mut turn = 1;
        if multi_turn {
            if let Some((_, turns)) = u.conv
                && (rng.unit() >= 1.0 - cfg.conversation.end_conversation_probability
                    || turns >= cfg.conversation.max_turns_per_conv)
            {
                u.conv = None;
            }
            if u.conv.is_none() {
                u.conv_seq += 1;
                let name = format!("conv_{}_{:06}", u.profile.id, u.conv_seq);
                let id = self.conversations.start(name, cfg.conversation.max_conversations);
                u.conv = Some((id, 0));
            }
        }
        let ctx = u.profile.context_tokens;
        let gen_max = u.profile.generation_tokens;
        let context_tokens = rng.int_in((ctx / 4).max(1), ctx);
        let gen_tokens = rng.int_in((gen_max / 4).max(1), gen_max);
        self.req_counter += 1;
        let req_id = self.req_counter;
        let key = match u.conv.as_mut() {
            Some((id, turns)) => {
                *turns += 1;
                turn = *turns;
                conv = Some(*id);
                // A conversation dropped from the registry keeps its name
                // only through the user's state.
                let name = self
                    .conversations
                    .name(*id)
                    .map_or_else(|| format!("conv_{}_{:06}", u.profile.id, u.conv_seq), str::to_string);
                format!("{name}_turn_{turn}")
            }
            None => format!("{}_req_{req_id:06}", u.profile.id),
        };
        if let Some(c) = conv {
            self.conversations.push(c, key.clone());
        }
        let prefix_prompt =
            if !cfg.disable_prefix_caching && rng.unit() < cfg.prefix_cache.system_prompt_hit_probability {
                Some(rng.below(SYSTEM_PROMPTS.len() as u64) as usize)
            } else {
                None
            };
        let rag_read = cfg.enable_rag && rng.unit() < cfg.rag.request_probability;
        let mut context_tokens = context_tokens;
        if let Some(p) = prefix_prompt {
            context_tokens = context_tokens.saturating_sub(system_prompt_entry(p).1).max(1);
        }
        let mut out = vec![KvRequest {
            user: index,
            request_id: format!("req_{}_{req_id:06}", u.profile.id),
            key,
            context_tokens,
            gen_tokens,
            phase: ReqPhase::for_context(context_tokens),
            qos: u.profile.qos,
            priority: u.profile.priority,
            submit: at,
            conv,
            turn,
            prefix_prompt,
            rag_read,
        }];
        if cfg.enable_rag && rng.unit() < cfg.rag.request_probability && !docs.is_empty() {
            let d = &docs[rng.below(docs.len() as u64) as usize];
            let picks = top_k(d.chunks.len(), cfg.rag.top_k_chunks as usize, cfg.rag.retrieval_distribution, rng);
            let tokens: u64 = picks.iter().map(|&i| d.chunks[i].1).sum();
            self.rag_counter += 1;
            out.push(KvRequest {
                user: index,
                request_id: format!("rag_{}_{:06}", u.profile.id, self.rag_counter),
                key: format!("rag_{}", d.id),
                context_tokens: tokens,
                gen_tokens: rng.int_in(50, 200),
                phase: ReqPhase::Decode,
                qos: u.profile.qos,
                priority: u.profile.priority,
                submit: at,
                conv: None,
                turn: 1,
                prefix_prompt: None,
                rag_read: false,
            });
        }
        out
    }
}

impl Generator {
    /// A request from an input (BurstGPT row or ShareGPT turn).
    pub fn fed(&mut self, cfg: &KvConfig, f: super::feed::FedRequest, submit: Instant, rng: &mut Stream) -> KvRequest {
        let conv = f.conversation.as_deref().map(|name| {
            let id = self.conversations.named(name, cfg.conversation.max_conversations);
            self.conversations.push_unique(id, &f.key);
            id
        });
        let prefix_prompt =
            if !cfg.disable_prefix_caching && rng.unit() < cfg.prefix_cache.system_prompt_hit_probability {
                Some(rng.below(SYSTEM_PROMPTS.len() as u64) as usize)
            } else {
                None
            };
        KvRequest {
            user: f.user_index,
            request_id: f.request_id,
            key: f.key,
            context_tokens: f.context_tokens,
            gen_tokens: f.gen_tokens,
            phase: ReqPhase::for_context(f.context_tokens),
            qos: f.qos,
            priority: f.qos.profile(cfg).priority,
            submit,
            conv,
            turn: f.turn,
            prefix_prompt,
            rag_read: false,
        }
    }
}

impl Default for Generator {
    fn default() -> Self {
        Generator::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::kvcache::users::build_users;

    fn cfg() -> KvConfig {
        serde_yaml_ng::from_str("{users: 4}").unwrap()
    }

    #[test]
    fn prefill_only_rule_is_ten_thousand_tokens() {
        assert_eq!(ReqPhase::for_context(9_999), ReqPhase::PrefillDecode);
        assert_eq!(ReqPhase::for_context(10_000), ReqPhase::Prefill);
    }

    #[test]
    fn conversations_end_after_max_turns_and_keys_are_deterministic() {
        let mut c = cfg();
        c.conversation.end_conversation_probability = 0.0;
        c.conversation.max_turns_per_conv = 3;
        let run = || {
            let users = build_users(&c, 9);
            let mut u = UserState::new(users[1].clone(), 9, 1);
            let mut g = Generator::new();
            let t0 = Instant::now();
            (0..7).map(|_| g.arrival(&c, &mut u, 1, t0, &[]).remove(0)).collect::<Vec<_>>()
        };
        let a = run();
        let keys: Vec<&str> = a.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "conv_user_0001_000001_turn_1",
                "conv_user_0001_000001_turn_2",
                "conv_user_0001_000001_turn_3",
                "conv_user_0001_000002_turn_1",
                "conv_user_0001_000002_turn_2",
                "conv_user_0001_000002_turn_3",
                "conv_user_0001_000003_turn_1",
            ]
        );
        let b = run();
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((&x.key, x.context_tokens, x.gen_tokens), (&y.key, y.context_tokens, y.gen_tokens));
        }
        // ÷4 lower bounds.
        let p = &build_users(&c, 9)[1];
        for r in &a {
            assert!(r.gen_tokens >= (p.generation_tokens / 4).max(1) && r.gen_tokens <= p.generation_tokens);
        }
    }

    #[test]
    fn about_one_in_five_conversations_ends_per_arrival_and_no_multi_turn_uses_request_ids() {
        let c = cfg();
        let users = build_users(&c, 3);
        let mut u = UserState::new(users[0].clone(), 3, 0);
        let mut g = Generator::new();
        let t0 = Instant::now();
        let turns: Vec<u32> = (0..5000).map(|_| g.arrival(&c, &mut u, 0, t0, &[]).remove(0).turn).collect();
        let starts = turns.iter().filter(|&&t| t == 1).count() as f64 / 5000.0;
        assert!((starts - 0.2).abs() < 0.03, "{starts}");
        let mut c2 = cfg();
        c2.disable_multi_turn = true;
        let mut u = UserState::new(users[0].clone(), 3, 0);
        let r = g.arrival(&c2, &mut u, 0, t0, &[]).remove(0);
        assert!(r.key.starts_with("user_0000_req_"), "{}", r.key);
        assert!(r.conv.is_none());
    }

    #[test]
    fn think_time_jitter_stays_within_0_8_to_1_2() {
        let users = build_users(&cfg(), 1);
        let mut u = UserState::new(users[0].clone(), 1, 0);
        let base = users[0].think_time_s;
        for _ in 0..1000 {
            let t = u.think().as_secs_f64();
            assert!(t >= base * 0.8 - 1e-9 && t < base * 1.2 + 1e-9);
        }
    }

    #[test]
    fn rag_documents_split_into_chunks_and_zipf_prefers_early_chunks() {
        let d = make_doc(3, 1100, 512, 256 << 20, 131_072);
        assert_eq!(d.chunks.iter().map(|c| c.1).collect::<Vec<_>>(), [512, 512, 76]);
        assert_eq!(d.chunks[0].0, "rag_doc_0003_chunk_0");
        // A byte cap smaller than a 512-token chunk shrinks the chunks.
        let d = make_doc(0, 1000, 512, 100 * 131_072, 131_072);
        assert_eq!(d.chunks[0].1, 100);
        let mut rng = Stream::new(1, "t", 0);
        let mut first = 0;
        for _ in 0..2000 {
            let k = top_k(20, 5, Retrieval::Zipfian, &mut rng);
            assert_eq!(k.len(), 5);
            let mut s = k.clone();
            s.sort();
            s.dedup();
            assert_eq!(s.len(), 5, "distinct");
            first += usize::from(k.contains(&0));
        }
        assert!(first > 1000, "chunk 0 is picked most often: {first}");
    }
}
