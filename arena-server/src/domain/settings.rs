//! The platform's rules and the pipeline's timings, as configured
//! (`[arena]` in `arena.toml`; see `app::config`).

/// The platform's rules and the pipeline's timings (`[arena]` in the file).
#[derive(Debug, Clone, PartialEq)]
pub struct ArenaSettings {
    /// Credits a new user receives from the mint.
    pub starting_credits: i64,
    /// How long a login session lives without a new login.
    pub session_ttl_s: u64,
    /// Writes (POST/PUT/PATCH/DELETE) one user or token may make per minute.
    pub writes_per_minute: u32,
    /// How often the matchmaker looks for new matches.
    pub matchmaker_interval_ms: u64,
    /// A stage message whose work failed this many times goes to the
    /// dead-letter stream (deliveries to a slow worker do not count).
    pub max_deliveries: u32,
    /// A message pending this long with a consumer is reclaimed by another.
    pub reclaim_idle_ms: u64,
    /// A match whose status has not moved for this long is re-enqueued.
    pub reconcile_after_s: u64,
    /// Matches one stage worker takes from its stream at once.
    pub stage_batch: usize,
    /// Bytes one user may store: the adapters they uploaded and the files of
    /// the Space versions they published, together.
    pub storage_quota_bytes: i64,
    /// Credits a training job costs per million tokens of its budget (the
    /// most tokens it may train on; see `JobSettings::token_budget`).
    pub training_credits_per_mtoken: i64,
    /// Proxies (load balancers) in front of the server: only a connection
    /// from one of these has its `X-Forwarded-For` and `X-Forwarded-Proto`
    /// read, so per-address limits count clients, not the proxy. Empty:
    /// the connection's own address is the client's.
    pub trusted_proxies: Vec<Network>,
    /// When the session cookie carries `Secure`.
    pub secure_cookies: SecureCookies,
    /// Days an export's files are kept after it finished; then they are
    /// deleted (the export's row, pairs and payment are kept).
    pub export_retention_days: u32,
    /// Seconds a training job may run (train and gate) before it is
    /// stopped: it is failed without a refund, having used its time.
    pub training_time_limit_s: u64,
    /// Open runtime workers: credits paid per thousand generated tokens
    /// (issued from the mint into the worker's escrow).
    pub worker_pay_per_ktoken: i64,
    /// The least a worker stakes.
    pub worker_min_stake: i64,
    /// Per cent of its stake a worker loses at a failed audit (its escrow
    /// is forfeited too).
    pub worker_slash_pct: i64,
    /// The lowest share of a worker's matches audited, in per cent.
    pub worker_audit_floor_pct: u32,
    /// Seconds pay stays in escrow before it is released to the owner.
    pub worker_escrow_s: u64,
    /// Seconds a worker has to answer a lease.
    pub worker_lease_s: u64,
    /// Seconds of a first ban after a failed audit; each strike doubles it.
    pub worker_ban_s: u64,
    /// A match whose pot holds at least this many credits is audited
    /// whatever the worker's rate.
    pub worker_full_audit_pot: i64,
    /// Battles: the least time a vote takes to count, in milliseconds, and
    /// what each word of the prompt and the two answers adds (the reading
    /// floor; a faster vote is stored as `too_fast`).
    pub vote_read_base_ms: u64,
    pub vote_read_ms_per_word: u64,
    /// Counted votes per voter, and per address, per day.
    pub vote_daily_cap: i64,
    pub vote_address_daily_cap: i64,
    /// Per cent of battles that are hidden gold checks (an answer against
    /// an answer to another prompt), which rate the voters.
    pub vote_gold_pct: u32,
}

/// An address or a network of addresses (`10.0.0.0/8`, `::1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl Network {
    /// `ADDRESS` or `ADDRESS/PREFIX`, IPv4 or IPv6.
    pub fn parse(text: &str) -> Result<Network, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: std::net::IpAddr = addr.parse().map_err(|_| format!("{text:?} is not an IP address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Network { addr, prefix })
    }

    /// A comma-separated list of networks.
    pub fn parse_list(text: &str) -> Result<Vec<Network>, String> {
        text.split(',').filter(|s| !s.trim().is_empty()).map(Network::parse).collect()
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        let bits = |a: std::net::IpAddr| -> u128 {
            match a {
                std::net::IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
                std::net::IpAddr::V6(v6) => u128::from(v6),
            }
        };
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        let width = if self.addr.is_ipv4() { 32 } else { 128 };
        let shift = 128 - (128 - width) - u32::from(self.prefix);
        let mask = if self.prefix == 0 { 0 } else { u128::MAX << (shift + (128 - width)) };
        bits(ip) & mask == bits(self.addr) & mask
    }
}

/// When the session cookie is marked `Secure` (sent over HTTPS only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecureCookies {
    /// When the request came over HTTPS: directly, or through a trusted
    /// proxy that says so (`X-Forwarded-Proto: https`).
    #[default]
    Auto,
    Always,
    Never,
}

impl SecureCookies {
    pub fn parse(text: &str) -> Result<SecureCookies, String> {
        match text {
            "auto" => Ok(SecureCookies::Auto),
            "always" => Ok(SecureCookies::Always),
            "never" => Ok(SecureCookies::Never),
            other => Err(format!("{other:?}: secure_cookies is auto, always or never")),
        }
    }
}

impl ArenaSettings {
    /// The workers' money rules.
    pub fn economics(&self) -> crate::domain::worker::Economics {
        crate::domain::worker::Economics {
            pay_per_ktoken: self.worker_pay_per_ktoken,
            slash_pct: self.worker_slash_pct,
            audit_floor: f64::from(self.worker_audit_floor_pct) / 100.0,
        }
    }
}

impl Default for ArenaSettings {
    fn default() -> ArenaSettings {
        ArenaSettings {
            starting_credits: 1_000,
            session_ttl_s: 7 * 24 * 3600,
            writes_per_minute: 120,
            matchmaker_interval_ms: 500,
            max_deliveries: 5,
            reclaim_idle_ms: 60_000,
            reconcile_after_s: 120,
            stage_batch: 32,
            storage_quota_bytes: 1 << 30,
            training_credits_per_mtoken: 100,
            trusted_proxies: Vec::new(),
            secure_cookies: SecureCookies::Auto,
            export_retention_days: 30,
            training_time_limit_s: crate::domain::training::JobSettings::MAX_MINUTES * 60,
            worker_pay_per_ktoken: 10,
            worker_min_stake: 500,
            worker_slash_pct: 50,
            worker_audit_floor_pct: 5,
            worker_escrow_s: 3600,
            worker_lease_s: 120,
            worker_ban_s: 600,
            worker_full_audit_pot: 500,
            vote_read_base_ms: 1500,
            vote_read_ms_per_word: 40,
            vote_daily_cap: 200,
            vote_address_daily_cap: 600,
            vote_gold_pct: 10,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_hold_their_addresses_and_no_others() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        let net = Network::parse("10.1.0.0/16").expect("parses");
        assert!(net.contains(ip("10.1.200.3")) && !net.contains(ip("10.2.0.1")) && !net.contains(ip("::1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "an IPv4-mapped IPv6 address is its IPv4 address");
        let one = Network::parse("127.0.0.1").expect("parses");
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6 = Network::parse("fd00::/8").expect("parses");
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!(Network::parse("0.0.0.0/0").expect("all").contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "proxy.example", "10.0.0/8", "::1/129"] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Network::parse_list("127.0.0.1, 10.0.0.0/8").expect("list").len(), 2);
    }
}
