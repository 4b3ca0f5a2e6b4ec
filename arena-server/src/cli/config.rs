//! `arena config`: where settings come from, and every variable read.

use crate::app::config::{ENV_VARS, Settings, redact_url};

pub fn show(settings: &Settings) {
    match &settings.source_file {
        Some(path) => println!("config file: {}", path.display()),
        None => println!("config file: none (./arena.toml does not exist; --config or ARENA_CONFIG names one)"),
    }
    println!("precedence: defaults < config file < DATABASE_URL/REDIS_URL < ARENA_* variables < flags\n");
    println!("server        {}:{}", settings.server.host, settings.server.port);
    println!("database.url  {}", redact_url(&settings.database.url));
    println!("redis.url     {}  prefix {:?}", redact_url(&settings.redis.url), settings.redis.prefix);
    println!("model.path    {}", settings.model.path.display());
    println!("data_dir      {}\n", settings.data_dir.display());
    println!("environment variables:");
    for (name, what) in ENV_VARS {
        println!("  {name:<32} {what}");
    }
}
