//! Users (spec §3.1): a template and a QoS class per user, and the fixed
//! per-user context length, generation length and think time.

use super::config::{KvConfig, QosProfile, Template};
use super::rng::Stream;

/// Request templates, drawn uniformly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TemplateKind {
    Chatbot,
    Coding,
    Document,
}

/// QoS classes; the derive order is the reporting order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum QosClass {
    Interactive,
    Responsive,
    Batch,
}

impl QosClass {
    pub const ALL: [QosClass; 3] = [QosClass::Interactive, QosClass::Responsive, QosClass::Batch];

    pub fn name(self) -> &'static str {
        match self {
            QosClass::Interactive => "interactive",
            QosClass::Responsive => "responsive",
            QosClass::Batch => "batch",
        }
    }

    pub fn profile(self, cfg: &KvConfig) -> &QosProfile {
        match self {
            QosClass::Interactive => &cfg.qos_profiles.interactive,
            QosClass::Responsive => &cfg.qos_profiles.responsive,
            QosClass::Batch => &cfg.qos_profiles.batch,
        }
    }

    /// One draw `r` against the distribution: `r < interactive_probability`
    /// → interactive, `r < responsive_threshold` → responsive, else batch.
    pub fn draw(r: f64, cfg: &KvConfig) -> QosClass {
        if r < cfg.qos_distribution.interactive_probability {
            QosClass::Interactive
        } else if r < cfg.qos_distribution.responsive_threshold {
            QosClass::Responsive
        } else {
            QosClass::Batch
        }
    }
}

/// One user's fixed profile.
#[derive(Debug, Clone, PartialEq)]
pub struct UserProfile {
    /// `user_{i:04d}`.
    pub id: String,
    pub template: TemplateKind,
    pub qos: QosClass,
    pub priority: u8,
    pub context_tokens: u64,
    pub generation_tokens: u64,
    pub think_time_s: f64,
}

fn template(cfg: &KvConfig, t: TemplateKind) -> &Template {
    match t {
        TemplateKind::Chatbot => &cfg.user_templates.chatbot,
        TemplateKind::Coding => &cfg.user_templates.coding,
        TemplateKind::Document => &cfg.user_templates.document,
    }
}

/// Builds the `users` profiles from the seed (one stream per user).
pub fn build_users(cfg: &KvConfig, seed: u64) -> Vec<UserProfile> {
    (0..cfg.users).map(|i| build_user(cfg, seed, i)).collect()
}

fn build_user(cfg: &KvConfig, seed: u64, i: u32) -> UserProfile {
    let mut rng = Stream::new(seed, "user-profile", u64::from(i));
    let kind = match rng.below(3) {
        0 => TemplateKind::Chatbot,
        1 => TemplateKind::Coding,
        _ => TemplateKind::Document,
    };
    let qos = QosClass::draw(rng.unit(), cfg);
    let t = template(cfg, kind);
    UserProfile {
        id: format!("user_{i:04}"),
        template: kind,
        qos,
        priority: qos.profile(cfg).priority,
        context_tokens: rng.int_in(t.context_range[0], t.context_range[1]),
        generation_tokens: rng.int_in(t.generation_range[0], t.generation_range[1]),
        think_time_s: rng.float_in(t.think_time_range[0], t.think_time_range[1]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(users: u32) -> KvConfig {
        let mut c: KvConfig = serde_yaml_ng::from_str("{}").unwrap();
        c.users = users;
        c
    }

    #[test]
    fn qos_split_over_ten_thousand_users_is_15_35_50_within_two_points() {
        let users = build_users(&cfg(10_000), 42);
        let share = |q: QosClass| users.iter().filter(|u| u.qos == q).count() as f64 / 100.0;
        assert!((share(QosClass::Interactive) - 15.0).abs() <= 2.0, "{}", share(QosClass::Interactive));
        assert!((share(QosClass::Responsive) - 35.0).abs() <= 2.0, "{}", share(QosClass::Responsive));
        assert!((share(QosClass::Batch) - 50.0).abs() <= 2.0, "{}", share(QosClass::Batch));
        for u in &users {
            assert_eq!(
                u.priority,
                match u.qos {
                    QosClass::Interactive => 3,
                    QosClass::Responsive => 2,
                    QosClass::Batch => 1,
                }
            );
        }
        assert_eq!(users[7].id, "user_0007");
    }

    #[test]
    fn template_ranges_are_respected_and_every_template_is_used() {
        let c = cfg(3000);
        let users = build_users(&c, 7);
        let mut seen = [0usize; 3];
        for u in &users {
            let t = template(&c, u.template);
            seen[u.template as usize] += 1;
            assert!((t.context_range[0]..=t.context_range[1]).contains(&u.context_tokens), "{u:?}");
            assert!((t.generation_range[0]..=t.generation_range[1]).contains(&u.generation_tokens), "{u:?}");
            assert!(u.think_time_s >= t.think_time_range[0] && u.think_time_s < t.think_time_range[1], "{u:?}");
        }
        for n in seen {
            assert!((900..=1100).contains(&n), "uniform template draw: {seen:?}");
        }
        // Chatbot: 512–4096 context, 50–200 generation, 0.1–0.5 s.
        assert_eq!(c.user_templates.chatbot.context_range, [512, 4096]);
        assert_eq!(c.user_templates.coding.context_range, [4096, 25000]);
        assert_eq!(c.user_templates.document.think_time_range, [0.3, 1.5]);
        assert_eq!(build_users(&c, 7), users, "same seed, same users");
    }
}
