//! Trace-driven requests (spec §7): BurstGPT rows or ShareGPT turns instead
//! of the synthetic users, using the parsers in [`super::inputs`]. The feed
//! turns them into queued requests at their due times; the simulation
//! handles them like any other request.
//!
//! Fixes of the reference: `replay_cycles: K` runs K complete passes and the
//! run ends when the last request has completed (the reference stopped as
//! soon as the K-th pass was enqueued, §16 item 9); ShareGPT with multi-turn
//! off works, and with multi-turn on a turn reloads the conversation's
//! earlier turns (§16 items 7–8). With no pacing (`trace_speedup: 0`, or
//! ShareGPT without `request_rate`), requests are enqueued as the queue
//! drains, at most [`MAX_WAITING`] waiting, instead of without bound.

use std::path::Path;

use super::config::KvConfig;
use super::inputs::burstgpt::{self, BurstTrace};
use super::inputs::sharegpt::{self, Conversation, Limits, ShareGptRequest};
use super::inputs::{Cycles, InputError};
use super::rng::Stream;
use super::users::QosClass;

/// Most requests a feed keeps waiting in the queue.
pub const MAX_WAITING: usize = 10_000;

/// One request from an input, before it becomes a [`super::scheduler::KvRequest`].
#[derive(Debug, Clone)]
pub struct FedRequest {
    pub user_id: String,
    pub user_index: u32,
    pub request_id: String,
    pub key: String,
    pub context_tokens: u64,
    pub gen_tokens: u64,
    pub qos: QosClass,
    /// ShareGPT conversation (multi-turn on) and turn.
    pub conversation: Option<String>,
    pub turn: u32,
    /// Seconds after the start of the window.
    pub due_s: f64,
}

enum Source {
    Burst { trace: BurstTrace, offsets: Vec<f64>, pass_s: f64 },
    ShareGpt { convs: Vec<Conversation>, multi_turn: bool, pass_items: Vec<ShareGptRequest>, rate: f64 },
}

/// The feed of a trace-driven run.
pub struct Feed {
    src: Source,
    cycles: Cycles,
    /// Requests handed out so far.
    pub seq: u64,
    pass: u64,
    pos: usize,
    users: u32,
    seed: u64,
    rng: Stream,
    /// What the input was, for the results.
    pub kind: &'static str,
    pub path: String,
    pub items_per_pass: u64,
    pub rows_skipped: u64,
}

impl Feed {
    /// The feed the config asks for, or None for the synthetic workload.
    pub fn from_config(cfg: &KvConfig, seed: u64) -> Result<Option<Feed>, InputError> {
        let cycles = Cycles::from_flag(cfg.replay_cycles);
        let rng = Stream::new(seed, "input-requests", 0);
        if cfg.use_burst_trace {
            let path = cfg.burst_trace_path.clone();
            let trace = burstgpt::load(Path::new(&path), cfg.skip_bad_rows)?;
            let offsets: Vec<f64> =
                burstgpt::schedule(&trace, Cycles::Exactly(1), cfg.trace_speedup).map(|s| s.due_s).collect();
            let pass_s = offsets.last().copied().unwrap_or(0.0);
            let n = trace.requests.len() as u64;
            let skipped = trace.rows_skipped;
            return Ok(Some(Feed {
                src: Source::Burst { trace, offsets, pass_s },
                cycles,
                seq: 0,
                pass: 0,
                pos: 0,
                users: cfg.users,
                seed,
                rng,
                kind: "burstgpt",
                path,
                items_per_pass: n,
                rows_skipped: skipped,
            }));
        }
        if let Some(path) = &cfg.dataset_path {
            let limits = Limits { max_conversations: cfg.max_conversations as usize, ..Limits::default() };
            let convs = sharegpt::load(Path::new(path), limits)?;
            let multi_turn = !cfg.disable_multi_turn;
            let pass_items = sharegpt::requests(&convs, multi_turn, seed, 0);
            let n = pass_items.len() as u64;
            return Ok(Some(Feed {
                src: Source::ShareGpt { convs, multi_turn, pass_items, rate: cfg.request_rate },
                cycles,
                seq: 0,
                pass: 0,
                pos: 0,
                users: cfg.users,
                seed,
                rng,
                kind: "sharegpt",
                path: path.clone(),
                items_per_pass: n,
                rows_skipped: 0,
            }));
        }
        Ok(None)
    }

    fn pass_allowed(&self, pass: u64) -> bool {
        match self.cycles {
            Cycles::Forever => true,
            Cycles::Exactly(k) => pass < u64::from(k),
        }
    }

    /// True when every pass has been handed out.
    pub fn exhausted(&self) -> bool {
        self.items_per_pass == 0 || !self.pass_allowed(self.pass)
    }

    /// When the next request is due (seconds after the window's start).
    pub fn next_due_s(&self) -> Option<f64> {
        if self.exhausted() {
            return None;
        }
        Some(match &self.src {
            Source::Burst { offsets, pass_s, .. } => self.pass as f64 * pass_s + offsets[self.pos],
            Source::ShareGpt { rate, .. } => {
                if *rate > 0.0 {
                    self.seq as f64 / rate
                } else {
                    0.0
                }
            }
        })
    }

    /// The next request (call when [`Feed::next_due_s`] has come).
    pub fn take(&mut self, qos_cfg: &KvConfig) -> Option<FedRequest> {
        let due_s = self.next_due_s()?;
        let qos = QosClass::draw(self.rng.unit(), qos_cfg);
        let req_id = self.seq + 1;
        let out = match &mut self.src {
            Source::Burst { trace, .. } => {
                let r = &trace.requests[self.pos];
                let user_id = burstgpt::user_id(self.pos);
                FedRequest {
                    key: format!("{user_id}_req_{req_id:04}"),
                    request_id: format!("{user_id}_req_{req_id:04}"),
                    user_index: (self.pos % 1000) as u32 % self.users.max(1),
                    user_id,
                    context_tokens: r.context_tokens.max(1),
                    gen_tokens: r.generate_tokens,
                    qos,
                    conversation: None,
                    turn: 1,
                    due_s,
                }
            }
            Source::ShareGpt { pass_items, .. } => {
                let r = &pass_items[self.pos];
                let user_index = (req_id % u64::from(self.users.max(1))) as u32;
                let user_id = format!("dataset_user_{user_index}");
                FedRequest {
                    request_id: format!("req_{user_id}_{req_id:06}"),
                    key: r.cache_key.clone(),
                    user_id,
                    user_index,
                    context_tokens: r.context_tokens.max(1),
                    gen_tokens: r.generate_tokens,
                    qos,
                    conversation: r.conversation_id.clone(),
                    turn: r.turn_number,
                    due_s,
                }
            }
        };
        self.seq += 1;
        self.pos += 1;
        if self.pos as u64 >= self.items_per_pass {
            self.pos = 0;
            self.pass += 1;
            let allowed = self.pass_allowed(self.pass);
            if let Source::ShareGpt { convs, multi_turn, pass_items, .. } = &mut self.src
                && allowed
            {
                *pass_items = sharegpt::requests(convs, *multi_turn, self.seed, self.pass);
            }
        }
        Some(out)
    }
}
